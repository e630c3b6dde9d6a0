"""Request bodies as data: each field a JSON schema, checked by the server as the verb reads it.

:class:`Body` declares a verb's fields (``retrieval.http.verbs``); the OpenAPI document publishes
``Body.schema()``; the server wraps each request in a :class:`CheckedBody`, which checks a field's
JSON type the first time the verb's parser reads it (then the fields it never read), so the server
finds problems in the same order as the client handles and names the same first one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping

from retrieval.errors import InvalidArgumentError
from retrieval.types import INCLUDE_QUERY


_JSON_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda x: isinstance(x, Mapping),
    "array": lambda x: isinstance(x, list),
    "string": lambda x: isinstance(x, str),
    "integer": lambda x: isinstance(x, int) and not isinstance(x, bool),
    "number": lambda x: isinstance(x, (int, float)) and not isinstance(x, bool),
    "boolean": lambda x: isinstance(x, bool),
    "null": lambda x: x is None,
}


def nullable(schema: dict[str, Any]) -> dict[str, Any]:
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return {**schema, "type": types + ["null"]}


STRING = {"type": "string"}
STRINGS = {"type": "array", "items": STRING}
OBJECT = {"type": "object"}
BOOLEAN = {"type": "boolean"}
COUNT = {"type": "integer", "minimum": 0}
FILTER = nullable(OBJECT)  # chromadb's clients send {} or null for "no filter"
EMBEDDINGS = {  # lists of floats, or base64 of little-endian float32 (chromadb's client)
    "type": "array",
    "items": {"oneOf": [{"type": "array", "items": {"type": "number"}}, {"type": "string", "format": "byte"}]},
}
INCLUDE = nullable({"type": "array", "items": {"type": "string", "enum": list(INCLUDE_QUERY)}})
COLUMN_OF_STRINGS = nullable({"type": "array", "items": nullable(STRING)})
COLUMN_OF_OBJECTS = nullable({"type": "array", "items": nullable(OBJECT)})


def _describe(schema: dict[str, Any]) -> str:
    types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
    return " or ".join("a list" if t == "array" else "an object" if t == "object" else
                       "an integer" if t == "integer" else t for t in types)


@dataclass(frozen=True)
class Body:
    """A request body: a JSON object with these fields (name -> JSON schema), ``required`` among them.

    The server enforces the body's shape and each field's JSON type (and an integer's ``minimum``);
    what a value means (ids unique, metadata values scalar, filters well formed) is the verb's
    ``decode``, with the validators the client handles use. A field is checked when ``decode``
    first reads it (:class:`CheckedBody`), so problems are found in the handle's order and both
    halves name the same first one; fields it never reads are checked after it. Unknown fields
    are ignored, as chromadb's server ignores them.
    """

    fields: Mapping[str, dict[str, Any]]
    required: tuple[str, ...] = ()
    why: str = ""  # said when a required field is missing

    def check_field(self, verb: str, body: Mapping[str, Any], name: str) -> None:
        schema = self.fields[name]
        if name not in body or body[name] is None:
            if name in self.required:
                raise InvalidArgumentError(f"{verb}: request body needs {name!r} ({_describe(schema)}){self.why}")
            if name not in body:
                return
        value = body[name]
        types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
        if not any(_JSON_TYPES[t](value) for t in types):
            raise InvalidArgumentError(f"{verb}: {name!r} must be {_describe(schema)}; got {value!r:.80}")
        if isinstance(value, int) and value < schema.get("minimum", value):
            raise InvalidArgumentError(f"{verb}: {name!r} must be at least {schema['minimum']}; got {value!r}")

    def schema(self) -> dict[str, Any]:
        out: dict[str, Any] = {"type": "object", "properties": dict(self.fields)}
        if self.required:
            out["required"] = list(self.required)
        return out


class CheckedBody(Mapping):
    """A request body whose declared fields are type-checked as they are read."""

    def __init__(self, verb: str, spec: Body, body: Any):
        if not isinstance(body, Mapping):
            # A null body is not "no arguments": POST .../get with null must not return everything.
            got = "no body" if body is None else f"JSON {type(body).__name__} {body!r:.80}"
            raise InvalidArgumentError(f"{verb}: request body must be a JSON object; got {got}")
        self._verb, self._spec, self._body, self._checked = verb, spec, body, set()

    def __getitem__(self, name: str) -> Any:
        if name in self._spec.fields and name not in self._checked:
            self._spec.check_field(self._verb, self._body, name)
            self._checked.add(name)
        return self._body[name]

    def get(self, name: str, default: Any = None) -> Any:
        if name in self._spec.fields and name not in self._checked:
            self._spec.check_field(self._verb, self._body, name)
            self._checked.add(name)
        return self._body.get(name, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._body)

    def __len__(self) -> int:
        return len(self._body)

    def check_rest(self) -> None:
        for name in self._spec.fields:
            self.get(name)
