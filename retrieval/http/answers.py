"""The JSON schema of each verb's answer, as chromadb 1.5.9's server shapes it.

``retrieval.http.verbs`` names one per verb; the OpenAPI document publishes them, and a test checks
every answer the server gives against the schema of its verb (``tests/test_wire_agreement.py``).
"""

from __future__ import annotations

from typing import Any

from retrieval.http.body import STRING, STRINGS, nullable

INTEGER = {"type": "integer", "minimum": 0}
OBJECT = {"type": "object"}
EMPTY = {"type": "object", "maxProperties": 0}


def _object(required: tuple[str, ...], **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(required)}


def _column(item: dict[str, Any]) -> dict[str, Any]:
    return nullable({"type": "array", "items": item})


HEARTBEAT = _object(("nanosecond heartbeat",), **{"nanosecond heartbeat": INTEGER})
PRE_FLIGHT = _object(("max_batch_size", "supports_base64_encoding"), max_batch_size={"type": "integer"},
                     supports_base64_encoding={"type": "boolean"})
IDENTITY = _object(("user_id", "tenant", "databases"), user_id=STRING, tenant=STRING, databases=STRINGS)
TENANT = _object(("name",), name=STRING, resource_name=nullable(STRING))
DATABASE = _object(("name", "tenant"), id=nullable(STRING), name=STRING, tenant=STRING)
COLLECTION = _object(
    ("id", "name", "configuration_json", "metadata", "dimension", "tenant", "database"),
    id=STRING, name=STRING, configuration_json=OBJECT, schema=nullable(OBJECT), metadata=nullable(OBJECT),
    dimension=nullable(INTEGER), tenant=STRING, database=STRING, log_position=INTEGER, version=INTEGER,
)
DELETED = _object(("deleted",), deleted=INTEGER)
_VECTOR = {"type": "array", "items": {"type": "number"}}
RECORDS = _object(
    ("ids", "include"), ids=STRINGS, include=STRINGS, embeddings=_column(_VECTOR),
    documents=_column(nullable(STRING)), uris=_column(nullable(STRING)), metadatas=_column(nullable(OBJECT)),
)
_PER_QUERY = lambda item: _column({"type": "array", "items": item})  # noqa: E731 - one list per query
QUERY_ANSWER = _object(
    ("ids", "include"), ids={"type": "array", "items": STRINGS}, include=STRINGS, embeddings=_PER_QUERY(_VECTOR),
    documents=_PER_QUERY(nullable(STRING)), uris=_PER_QUERY(nullable(STRING)), metadatas=_PER_QUERY(nullable(OBJECT)),
    distances=_PER_QUERY({"type": "number"}),
)
SEARCH_ANSWER = _object(("ids",), ids={"type": "array", "items": STRINGS})
