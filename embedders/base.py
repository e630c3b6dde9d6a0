"""The ``EmbeddingFunction`` protocol (chromadb-compatible) and a base class implementing it.

A chromadb-style embedding function (``__call__``, static ``name()``, ``get_config()``,
static ``build_from_config()``) satisfies :class:`EmbeddingFunction` and can be registered
as is. :class:`BaseEmbeddingFunction` adds what the built-ins share: one input-normalisation
path for texts, images and mixed lists, output checks (one float32 1-d vector per input),
strict config parsing that refuses unknown keys and ``trust_remote_code``, and host
runtime options that are never persisted.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from embedders.errors import ConfigError, EmbeddingCountError, UnsupportedInputError
from embedders.images import ACCEPTED_IMAGES, is_image, to_rgb_uint8

__all__ = [
    "BaseEmbeddingFunction",
    "EmbeddingFunction",
    "Embeddings",
    "MODALITIES",
    "check_embeddings",
    "modalities_of",
    "parse_config",
]

Embeddings = list[np.ndarray]
MODALITIES = frozenset({"text", "image"})

# Options that must never be honoured from a stored config: they execute code from elsewhere.
_REFUSED_TRUE = ("trust_remote_code",)


D = TypeVar("D", contravariant=True)


@runtime_checkable
class EmbeddingFunction(Protocol[D]):
    """What ``retrieval`` needs from an embedding function (chromadb's protocol, plus modalities).

    It is also a base class, as chromadb's is: a subclass that defines only ``__call__`` gets
    chromadb's defaults (``default_space()`` is ``"l2"``, all three spaces supported, and no
    ``name()``/``get_config()``, so it is a *legacy* function that cannot be persisted).

    Example:
        >>> from embedders import HashEmbeddingFunction
        >>> isinstance(HashEmbeddingFunction(), EmbeddingFunction)
        True
        >>> class Mine(EmbeddingFunction):
        ...     def __call__(self, input):
        ...         return [np.ones(2, np.float32) for _ in input]
        >>> Mine().default_space(), Mine().is_legacy()
        ('l2', True)
    """

    def __call__(self, input: D) -> Embeddings: ...

    def embed_query(self, input: D) -> Embeddings:  # noqa: A002 - chromadb's parameter name
        return self(input)

    @staticmethod
    def name() -> str:
        return NotImplemented  # chromadb's marker of a function that cannot be persisted

    def get_config(self) -> dict[str, Any]:
        return NotImplemented

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> EmbeddingFunction:
        return NotImplemented

    def default_space(self) -> str:
        return "l2"  # chromadb's default for functions that do not say

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    def is_legacy(self) -> bool:
        return self.name() is NotImplemented or self.get_config() is NotImplemented


class BaseEmbeddingFunction:
    """Shared behaviour of the built-in embedding functions.

    Subclasses set ``CONFIG_KEYS`` (persisted constructor arguments, stored as attributes of
    the same name), ``RUNTIME_OPTIONS`` (host-specific constructor arguments, never
    persisted), ``MODALITIES``, and implement ``_embed_texts`` and/or ``_embed_images``.

    ``__call__`` accepts a list of strings, a list of images (see
    :func:`embedders.images.to_rgb_uint8`), or a mix; each item is embedded in its own
    modality and the order is kept. A bare string or image is treated as a list of one.

    Example:
        >>> from embedders import HashEmbeddingFunction
        >>> ef = HashEmbeddingFunction(dim=8)
        >>> [v.shape for v in ef(["a red circle", np.zeros((5, 5, 3), np.uint8)])]
        [(8,), (8,)]
    """

    CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()
    RUNTIME_OPTIONS: ClassVar[tuple[str, ...]] = ()
    MODALITIES: ClassVar[frozenset[str]] = frozenset()
    #: Stored key -> constructor key, for keys renamed to chromadb's names (old databases).
    CONFIG_ALIASES: ClassVar[dict[str, str]] = {}
    #: Keys chromadb stores that are host choices here: accepted in a stored config, not used.
    IGNORED_CONFIG_KEYS: ClassVar[tuple[str, ...]] = ()

    # ------------------------------------------------------------ chromadb protocol
    @staticmethod
    def name() -> str:
        raise NotImplementedError

    def __call__(self, input: Any) -> Embeddings:  # noqa: A002 - chromadb's parameter name
        items = _as_items(input)
        texts: list[tuple[int, str]] = []
        images: list[tuple[int, np.ndarray]] = []
        for i, item in enumerate(items):
            if isinstance(item, str):
                texts.append((i, item))
            elif is_image(item):
                try:
                    images.append((i, to_rgb_uint8(item)))
                except UnsupportedInputError as exc:
                    raise UnsupportedInputError(f"input at position {i}: {exc}") from exc
            else:
                raise UnsupportedInputError(
                    f"input at position {i} is a {type(item).__name__}; expected a str "
                    f"(text) or an image: {ACCEPTED_IMAGES}"
                )
        modalities = self.modalities()
        for label, group in (("text", texts), ("image", images)):
            if group and label not in modalities:
                raise UnsupportedInputError(
                    f"{self.name()!r} embeds {' and '.join(sorted(modalities))} only; input at "
                    f"position {group[0][0]} is {'an image' if label == 'image' else 'text'} (use an "
                    f"embedding function that accepts {label}s, e.g. 'open_clip')"
                )
        out: list[np.ndarray | None] = [None] * len(items)
        if texts:
            vectors = self._embed_texts([t for _, t in texts])
            for (i, _), v in zip(texts, check_embeddings(vectors, len(texts), self.name())):
                out[i] = v
        if images:
            vectors = self._embed_images([im for _, im in images])
            for (i, _), v in zip(images, check_embeddings(vectors, len(images), self.name())):
                out[i] = v
        result = [v for v in out if v is not None]
        dims = {v.shape[0] for v in result}
        if len(dims) > 1:
            raise EmbeddingCountError(f"{self.name()!r} returned vectors of mixed sizes {sorted(dims)}")
        return result

    def embed_query(self, input: Any) -> Embeddings:  # noqa: A002
        """Embed queries; same as calling the function unless a model embeds queries differently.

        Example:
            >>> from embedders import HashEmbeddingFunction
            >>> len(HashEmbeddingFunction().embed_query(["red"]))
            1
        """
        return self(input)

    def get_config(self) -> dict[str, Any]:
        """The persisted config: constructor arguments minus host options; JSON-safe."""
        return {key: _json_safe(getattr(self, key)) for key in self.CONFIG_KEYS}

    def default_space(self) -> str:
        return "cosine"

    def supported_spaces(self) -> list[str]:
        return ["cosine", "l2", "ip"]

    def is_legacy(self) -> bool:
        return False

    def modalities(self) -> frozenset[str]:
        """The input kinds this function embeds: a subset of ``{"text", "image"}``."""
        return frozenset(self.MODALITIES)

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` if ``config`` would not be accepted by ``build_from_config``."""
        parse_config(cls, config)

    def validate_config_update(self, old_config: Mapping[str, Any], new_config: Mapping[str, Any]) -> None:
        """Refuse changes that would change the vector space of stored embeddings."""
        changed = sorted(k for k in new_config if k in old_config and new_config[k] != old_config[k])
        if changed:
            raise ConfigError(
                f"{self.name()!r} config keys {changed} cannot change after creation: stored "
                "vectors were made with the old values (create a new collection instead)"
            )

    # ------------------------------------------------------------ runtime options
    def set_runtime_options(self, **options: Any) -> None:
        """Apply host-specific options (e.g. ``device``, ``batch_size``); never persisted.

        Example:
            >>> from embedders import HashEmbeddingFunction
            >>> HashEmbeddingFunction().set_runtime_options(device="cpu")
            Traceback (most recent call last):
            ...
            embedders.errors.ConfigError: 'hash' takes no runtime option 'device'; ...
        """
        for key in options:
            if key not in self.RUNTIME_OPTIONS:
                raise ConfigError(
                    f"{self.name()!r} takes no runtime option {key!r}; accepted: "
                    f"{list(self.RUNTIME_OPTIONS)}"
                )
        for key, value in options.items():
            setattr(self, key, value)
        self._runtime_changed(set(options))

    def _runtime_changed(self, keys: set[str]) -> None:
        """Hook: react to changed runtime options (e.g. move a loaded model)."""

    # ------------------------------------------------------------ subclass hooks
    def _embed_texts(self, texts: list[str]) -> Sequence[Any]:
        raise NotImplementedError

    def _embed_images(self, images: list[np.ndarray]) -> Sequence[Any]:
        raise NotImplementedError

    @classmethod
    def _from_config(cls, config: Mapping[str, Any]) -> Any:
        return cls(**parse_config(cls, config))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def modalities_of(embedding_function: Any) -> frozenset[str]:
    """What an embedding function declares it embeds; both kinds when it declares nothing.

    chromadb-style functions have no ``modalities()``; they are let through so that the
    function itself accepts or rejects an input, rather than being refused up front.

    Example:
        >>> from embedders import HashEmbeddingFunction
        >>> sorted(modalities_of(HashEmbeddingFunction(modalities=["text"])))
        ['text']
        >>> sorted(modalities_of(lambda input: []))
        ['image', 'text']
    """
    declared = getattr(embedding_function, "modalities", None)
    if callable(declared):
        try:
            value = frozenset(declared())
        except TypeError:  # e.g. an unrelated attribute that happens to be called modalities
            return MODALITIES
        if value and value <= MODALITIES:
            return value
    return MODALITIES


def parse_config(cls: type, config: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a stored config against ``cls.CONFIG_KEYS``; return the constructor kwargs.

    Unknown keys are refused (a typo must not silently change the model), runtime options
    are refused with a pointer to where they belong, and ``trust_remote_code=True`` is
    refused because a stored config must never run code fetched from elsewhere.

    Example:
        >>> from embedders import HashEmbeddingFunction
        >>> parse_config(HashEmbeddingFunction, {"dimm": 8})
        Traceback (most recent call last):
        ...
        embedders.errors.ConfigError: unknown key 'dimm' in 'hash' config (did you mean 'dim'?); ...
    """
    label = _label(cls)
    if not isinstance(config, Mapping):
        raise ConfigError(f"{label} config must be a dict; got {type(config).__name__}")
    for key in _REFUSED_TRUE:
        if config.get(key):
            raise ConfigError(
                f"{label} config sets {key}={config[key]!r}; refused: a stored config must not "
                "run code downloaded with a model (load that model in code you control instead)"
            )
    allowed = tuple(getattr(cls, "CONFIG_KEYS", ()))
    runtime = tuple(getattr(cls, "RUNTIME_OPTIONS", ()))
    aliases: Mapping[str, str] = getattr(cls, "CONFIG_ALIASES", {})
    ignored = tuple(getattr(cls, "IGNORED_CONFIG_KEYS", ()))
    kwargs: dict[str, Any] = {}
    for key, value in config.items():
        if key in aliases:  # an older or chromadb name of a key: read it as the current one
            target = aliases[key]
            if target in config and config[target] != value:
                raise ConfigError(
                    f"{label} config sets both {key!r}={value!r} and {target!r}={config[target]!r}, "
                    f"which name the same setting; keep only {target!r}"
                )
            kwargs[target] = value
        elif key in ignored:
            continue  # written by chromadb for its own use (e.g. its device); the host decides here
        elif key in allowed:
            kwargs[key] = value
        elif key in runtime:
            raise ConfigError(
                f"{key!r} is a host runtime option of {label}, not part of its stored config; "
                f"pass it when opening the collection instead (e.g. {key}={value!r})"
            )
        elif key in _REFUSED_TRUE:
            continue  # present but false: harmless
        else:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(
                f"unknown key {key!r} in {label} config{hint}; accepted keys: {list(allowed)}"
            )
    return kwargs


def check_embeddings(vectors: Any, expected: int, who: str = "embedding function") -> Embeddings:
    """Return ``vectors`` as a list of 1-d float32 arrays, or raise if they are malformed.

    An embedding function must never drop an input silently: a wrong count is an error.

    Example:
        >>> [v.dtype for v in check_embeddings(np.ones((2, 3)), 2)]
        [dtype('float32'), dtype('float32')]
    """
    out = [np.asarray(v, dtype=np.float32) for v in vectors]
    if len(out) != expected:
        raise EmbeddingCountError(
            f"{who!r} returned {len(out)} vectors for {expected} inputs; an embedding "
            "function must return exactly one vector per input"
        )
    for i, v in enumerate(out):
        if v.ndim != 1 or v.shape[0] == 0:
            raise EmbeddingCountError(
                f"{who!r} returned a vector of shape {v.shape} at position {i}; expected 1-d"
            )
        if not np.isfinite(v).all():
            raise EmbeddingCountError(f"{who!r} returned NaN or infinite values at position {i}")
    return out


def _as_items(input: Any) -> list[Any]:  # noqa: A002
    if isinstance(input, str) or is_image(input):
        return [input]
    if isinstance(input, np.ndarray):
        if input.ndim == 4:  # a batch of images, N x H x W x C
            return list(input)
        raise UnsupportedInputError(
            f"cannot embed a bare array of shape {input.shape}; pass a list of images (each "
            f"{ACCEPTED_IMAGES}) or an N x H x W x C batch"
        )
    if isinstance(input, Iterable) and not isinstance(input, (bytes, Mapping)):
        return list(input)
    raise UnsupportedInputError(
        f"cannot embed an object of type {type(input).__name__}; pass a list of strings "
        "and/or images"
    )


def _json_safe(value: Any) -> Any:
    if isinstance(value, (tuple, list, frozenset, set)):
        items = sorted(value) if isinstance(value, (set, frozenset)) else value
        return [_json_safe(v) for v in items]
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    return value


def _label(cls: type) -> str:
    try:
        return repr(cls.name())  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - any failure just means "use the class name"
        return cls.__qualname__
