"""How a collection's embedding function and data loader are persisted and rebuilt.

Both are stored by registry name plus config (never an import path), and rebuilt through the
``embedders`` / ``loaders`` registries. Building reads no weights: models load on first embed.

An embedding function that cannot be persisted (chromadb's "legacy" functions: a bare
``EmbeddingFunction`` subclass, or one whose class is not registered) is accepted as chromadb
accepts it: one warning, and the collection stores ``{"type": "legacy"}``. Reopened without the
function, the collection holds an :class:`UnsavedEmbeddingFunction` whose every embed fails with
the fix. chromadb silently embeds with its default function there, which mixes vector spaces.
"""

from __future__ import annotations

import json
import sys
import warnings
import weakref
from typing import Any, Mapping

from retrieval.config import LEGACY, ComponentSpec
from retrieval.errors import ConfigurationConflictError, InvalidArgumentError


class _Unset:
    """Sentinel for "argument not given" where ``None`` is a meaningful value."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()

# Classes already warned about as unsaveable: the warning is said once per class and process, not
# on every get_or_create_collection call that passes the function again.
_WARNED: weakref.WeakSet = weakref.WeakSet()


def default_embedding_function() -> Any:
    """chromadb's default: all-MiniLM-L6-v2, loaded from the bundled weights on first use."""
    import embedders

    return embedders.build_embedding_function("default", {})


def from_configuration(configuration: Any, embedding_function: Any) -> Any:
    """The embedding function, also when chromadb code passes it as ``configuration={"embedding_function": ef}``.

    Args:
        configuration: The ``configuration=`` argument of ``create_collection``.
        embedding_function: Its ``embedding_function=`` argument (``UNSET`` when not given).

    Returns:
        The function to use: the argument, or the configuration's (an object, or a stored
        ``{"name", "config"}`` spec rebuilt through the registry).

    Raises:
        InvalidArgumentError: both name a function, and they differ (chromadb refuses this too).
    """
    given = configuration.get("embedding_function") if isinstance(configuration, Mapping) else None
    if given is None:
        return embedding_function
    if isinstance(given, Mapping):
        spec = ComponentSpec.from_dict(given, "configuration['embedding_function']")
        if spec.legacy:  # chromadb's "no saved function": nothing to use
            return embedding_function
        given = build(spec, "embedding_function")
    if embedding_function is UNSET or embedding_function is None or embedding_function is given:
        return given
    if _name_of(embedding_function) != _name_of(given) or _config_of(embedding_function) != _config_of(given):
        raise InvalidArgumentError(
            f"two embedding functions given: embedding_function={type(embedding_function).__name__} and "
            f"configuration['embedding_function']={type(given).__name__}; pass only one of them"
        )
    return embedding_function


def _config_of(component: Any) -> Any:
    try:
        return component.get_config()
    except Exception:  # noqa: BLE001 - a function without a config compares by identity above
        return None


def describe(component: Any, kind: str, *, persist: bool = True) -> ComponentSpec | None:
    """The spec to persist for an embedding function (``kind="embedding_function"``) or loader.

    A component that is not registered cannot be rebuilt in another process. For an embedding
    function that is chromadb's "legacy" case: it is stored as :data:`~retrieval.config.LEGACY`
    with one warning (none when the caller opted out with ``persist=False``). For a data loader
    or a sparse embedding function (``kind="sparse_embedding_function"``) it is an error unless
    ``persist=False``.
    """
    if component is None:
        return None
    if not persist:
        return LEGACY if kind == "embedding_function" else None
    registry = _registry(kind)
    name = _name_of(component)
    problem = None
    if name is None:
        problem = "it has no name() (chromadb's legacy protocol)"
    elif name not in registry.names():
        problem = f"its name {name!r} is not registered"
    elif not isinstance(component, registry.get(name)):
        problem = f"its name {name!r} is registered to another class, {registry.get(name).__qualname__}"
    else:
        try:
            config = component.get_config()
            json.dumps(config)
        except Exception as e:  # noqa: BLE001 - any failure means "cannot persist"
            problem = f"get_config() failed or is not JSON ({e})"
        else:
            return ComponentSpec(name, dict(config))
    if kind == "embedding_function":
        if type(component) in _WARNED:
            return LEGACY
        _WARNED.add(type(component))
        warnings.warn(
            f"embedding function {type(component).__name__} cannot be saved with the collection: {problem}. "
            "It is used for this collection now, and the collection records that it was not saved "
            "({'type': 'legacy'}, as chromadb does): pass embedding_function=... again to get_collection when "
            "reopening it. To save it, decorate the class with @register_embedding_function (from "
            "retrieval.utils.embedding_functions) and implement name(), get_config() and build_from_config().",
            UserWarning,
            stacklevel=_user_stacklevel(),
        )
        return LEGACY
    if kind == "data_loader":
        raise InvalidArgumentError(
            f"data loader {type(component).__name__} cannot be saved with the collection: {problem}. Register its "
            "class with @loaders.register('name') and implement get_config/build_from_config, or pass "
            "persist_data_loader=False to keep it for this process only (get_collection will then need it "
            "passed again)."
        )
    raise InvalidArgumentError(
        f"sparse embedding function {type(component).__name__} cannot be saved with the collection: {problem}. "
        "Decorate its class with @register_embedding_function (retrieval.utils.embedding_functions) and "
        "implement name(), get_config() and build_from_config(): documents added later are embedded with it."
    )


def _user_stacklevel() -> int:
    """The ``stacklevel`` that points a warning raised by our caller at the first frame outside
    ``retrieval``, whatever wrappers (error mapping, ``get_or_create_collection``) sit between."""
    level, frame = 1, sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("retrieval."):
        frame, level = frame.f_back, level + 1
    return level


def build(
    spec: ComponentSpec, kind: str, options: Mapping[str, Any] | None = None, collection: str | None = None
) -> Any:
    """Rebuild a persisted component; ``options`` are host choices such as ``device``.

    A :data:`~retrieval.config.LEGACY` embedding function rebuilds as an
    :class:`UnsavedEmbeddingFunction` for ``collection``: opening works, embedding fails clearly.
    """
    import embedders
    import loaders

    if spec.legacy:
        return UnsavedEmbeddingFunction(collection)
    builder = loaders.build_loader if kind == "data_loader" else embedders.build_embedding_function
    return builder(spec.name, dict(spec.config), **dict(options or {}))


class UnsavedEmbeddingFunction:
    """Stands in for an embedding function a collection could not save; every embed fails with the fix.

    Args:
        collection: The collection's name, for the message.

    Example:
        >>> UnsavedEmbeddingFunction("notes")(["hello"])
        Traceback (most recent call last):
        ...
        retrieval.errors.InvalidArgumentError: collection 'notes' was created with a custom embedding function that ...
    """

    def __init__(self, collection: str | None = None) -> None:
        self.collection = collection

    def _fail(self) -> InvalidArgumentError:
        which = f"collection {self.collection!r}" if self.collection else "this collection"
        return InvalidArgumentError(
            f"{which} was created with a custom embedding function that could not be saved with it "
            "(stored as {'type': 'legacy'}), so there is nothing to embed with. Pass the same function "
            f"again: get_collection({self.collection or 'name'!r}, embedding_function=MyEmbeddingFunction()), "
            "or give embeddings yourself. To save it with the collection, decorate its class with "
            "@register_embedding_function (retrieval.utils.embedding_functions)."
        )

    def __call__(self, input: Any) -> Any:  # noqa: A002 - chromadb's parameter name
        raise self._fail()

    def embed_query(self, input: Any) -> Any:  # noqa: A002
        raise self._fail()

    def embed_image_uris(self, uris: Any, loader: Any, **options: Any) -> Any:
        raise self._fail()  # before any URI is read

    @staticmethod
    def name() -> str:
        return "legacy"

    def get_config(self) -> Any:
        return NotImplemented

    def is_legacy(self) -> bool:
        return True

    def __repr__(self) -> str:
        return f"UnsavedEmbeddingFunction(collection={self.collection!r})"


def check_same(component: Any, stored: ComponentSpec, kind: str, collection: str) -> None:
    """Refuse a component passed to get_collection that differs from the stored one.

    The stored config is compared in its current form (its class rebuilds and re-describes it),
    so a config written under older key names, or by chromadb (with its ``device``), matches the
    same function passed in code. A legacy (unsaved) function cannot be compared: any is accepted.
    """
    if stored.legacy:
        return
    name = _name_of(component)
    config = None
    stored_name, stored_config = _canonical(stored, kind)
    if name == stored_name:
        try:
            config = component.get_config()
        except Exception:  # noqa: BLE001
            config = None
    if name != stored_name or config != stored_config:
        raise ConfigurationConflictError(
            f"collection {collection!r} was created with {kind.replace('_', ' ')} {stored.name!r} "
            f"(config {stored.config}); got {name!r} (config {config}). Omit the argument to use the stored one, "
            "or create a new collection for a different model."
        )


def _name_of(component: Any) -> str | None:
    fn = getattr(component, "name", None)
    if not callable(fn):
        return None
    try:
        name = fn()
    except Exception:  # noqa: BLE001 - chromadb legacy functions raise NotImplementedError
        return None
    return name if isinstance(name, str) else None


def _canonical(stored: ComponentSpec, kind: str) -> tuple[str, Any]:
    """``(name(), get_config())`` of what ``stored`` rebuilds into; the stored values if it cannot be."""
    try:
        cls = _registry(kind).get(stored.name)
        rebuilt = cls.build_from_config(dict(stored.config))
        return _name_of(rebuilt) or stored.name, rebuilt.get_config()
    except Exception:  # noqa: BLE001 - an unbuildable spec is compared as stored
        return stored.name, stored.config


def _registry(kind: str):
    if kind == "data_loader":
        import loaders

        return loaders.data_loaders
    import embedders

    return embedders.embedding_functions
