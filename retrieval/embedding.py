"""How a collection's embedding function and data loader are persisted and rebuilt.

Both are stored by registry name plus config (never an import path), and rebuilt through the
``embedders`` / ``loaders`` registries. Building reads no weights: models load on first embed.
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from retrieval.config import ComponentSpec
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


def default_embedding_function() -> Any:
    """chromadb's default: all-MiniLM-L6-v2, loaded from the bundled weights on first use."""
    import embedders

    return embedders.build_embedding_function("default", {})


def describe(component: Any, kind: str, *, persist: bool = True) -> ComponentSpec | None:
    """The spec to persist for an embedding function (``kind="embedding_function"``) or loader.

    A component that is not registered cannot be rebuilt in another process; that is an error
    unless the caller opted out with ``persist=False``.
    """
    if component is None or not persist:
        return None
    registry = _registry(kind)
    name = _name_of(component)
    problem = None
    if name is None:
        problem = "it has no name() (chromadb's legacy protocol)"
    elif name not in registry.names():
        problem = f"its name {name!r} is not registered"
    else:
        try:
            config = component.get_config()
            json.dumps(config)
        except Exception as e:  # noqa: BLE001 - any failure means "cannot persist"
            problem = f"get_config() failed or is not JSON ({e})"
        else:
            return ComponentSpec(name, dict(config))
    flag = "persist_embedding_function" if kind == "embedding_function" else "persist_data_loader"
    decorator = "@embedders.register" if kind == "embedding_function" else "@loaders.register"
    raise InvalidArgumentError(
        f"{kind.replace('_', ' ')} {type(component).__name__} cannot be saved with the collection: {problem}. "
        f"Register its class with {decorator}('name') and implement get_config/build_from_config, or pass "
        f"{flag}=False to keep it for this process only (get_collection will then need it passed again)."
    )


def build(spec: ComponentSpec, kind: str, options: Mapping[str, Any] | None = None) -> Any:
    """Rebuild a persisted component; ``options`` are host choices such as ``device``."""
    import embedders
    import loaders

    builder = embedders.build_embedding_function if kind == "embedding_function" else loaders.build_loader
    return builder(spec.name, dict(spec.config), **dict(options or {}))


def check_same(component: Any, stored: ComponentSpec, kind: str, collection: str) -> None:
    """Refuse a component passed to get_collection that differs from the stored one."""
    name = _name_of(component)
    config = None
    if name == stored.name:
        try:
            config = component.get_config()
        except Exception:  # noqa: BLE001
            config = None
    if name != stored.name or config != stored.config:
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


def _registry(kind: str):
    if kind == "embedding_function":
        import embedders

        return embedders.embedding_functions
    import loaders

    return loaders.data_loaders
