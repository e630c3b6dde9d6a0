"""Exceptions raised by ``embedders`` and ``loaders``.

Each subclasses a builtin, so callers (and ``retrieval``'s error mapping) can catch them by
the builtin they behave like, without importing this module::

    UnknownNameError (ValueError, LookupError)    a registry has no entry of that name
    ConfigError (ValueError)                      a stored or given config is not acceptable
    UnsupportedInputError (ValueError, TypeError) an input an embedding function cannot take
    ModelUnavailableError (RuntimeError)          model weights are not reachable from this host
    EmbeddingCountError (RuntimeError)            an embedding function returned a wrong number
                                                  or shape of vectors
    LoadError (ValueError)                        a loader could not read or decode one URI
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "EmbeddingCountError",
    "LoadError",
    "ModelUnavailableError",
    "UnknownNameError",
    "UnsupportedInputError",
]


class UnknownNameError(ValueError, LookupError):
    """A registry lookup named something that is not registered.

    It is both a ``ValueError`` (a bad name in a config is bad input) and a ``LookupError``
    (it is a failed lookup), so either ``except`` clause catches it.
    """


class ConfigError(ValueError):
    """A config dict was rejected: an unknown key, a bad value, or a refused option."""


class UnsupportedInputError(ValueError, TypeError):
    """An input an embedding function cannot embed (wrong type, shape, dtype or modality)."""


class ModelUnavailableError(RuntimeError):
    """Model weights could not be found locally nor fetched (e.g. with ``HF_HUB_OFFLINE=1``)."""


class EmbeddingCountError(RuntimeError):
    """An embedding function returned fewer/more vectors than inputs, or malformed vectors."""


class LoadError(ValueError):
    """A data loader could not read or decode a URI; ``uri`` holds the URI that failed.

    Args:
        message: What went wrong and how to fix it.
        uri: The URI that could not be loaded.

    Example:
        >>> err = LoadError("cannot read 'memory://x.png'", uri="memory://x.png")
        >>> err.uri
        'memory://x.png'
    """

    def __init__(self, message: str, *, uri: str | None = None) -> None:
        super().__init__(message)
        self.uri = uri
