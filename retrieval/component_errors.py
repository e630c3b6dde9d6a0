"""Errors of ``embedders`` and ``loaders``, mapped into retrieval's hierarchy at the boundary.

``embedders`` and ``loaders`` import nothing from ``retrieval`` (DESIGN section 1), so their errors
(:mod:`embedders.errors`) sit outside :class:`~retrieval.errors.RetrievalError` and carry no HTTP
status. ``Client`` and ``Collection`` re-raise them (``raise ... from e``, message kept) as the
classes below. Each is both a retrieval error and the original class, so ``except
InvalidArgumentError``, ``except ValueError`` and ``except embedders.LoadError`` all still catch it::

    UnknownNameError      (InvalidArgumentError, embedders.UnknownNameError)       400
    ConfigError           (InvalidArgumentError, embedders.ConfigError)            400
    UnsupportedInputError (InvalidArgumentError, embedders.UnsupportedInputError)  400
    LoadError             (InvalidArgumentError, embedders.LoadError)              400
    ModelUnavailableError (RetrievalError, embedders.ModelUnavailableError)        503
    EmbeddingCountError   (InternalError, embedders.EmbeddingCountError)           500

Example:
    >>> import embedders
    >>> @maps_component_errors
    ... def build(name):
    ...     return embedders.build_embedding_function(name, {})
    >>> try:
    ...     build("nonexistent")
    ... except InvalidArgumentError as e:
    ...     print(type(e).__name__, e.http_status, isinstance(e, embedders.UnknownNameError))
    UnknownNameError 400 True
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from embedders import errors as _source
from retrieval.errors import InternalError, InvalidArgumentError, RetrievalError

__all__ = [
    "ConfigError", "EmbeddingCountError", "LoadError", "ModelUnavailableError", "UnknownNameError",
    "UnsupportedInputError", "as_retrieval_error", "component_errors", "maps_component_errors",
]

F = TypeVar("F", bound=Callable[..., Any])


class UnknownNameError(InvalidArgumentError, _source.UnknownNameError):
    """A registry name (embedding function, loader) that is not registered in this process."""


class ConfigError(InvalidArgumentError, _source.ConfigError):
    """A stored or given embedding-function / loader config that is not acceptable."""


class UnsupportedInputError(InvalidArgumentError, _source.UnsupportedInputError):
    """An input the collection's embedding function cannot embed."""


class LoadError(InvalidArgumentError, _source.LoadError):
    """A URI the collection's data loader could not read; ``uri`` names it."""


class ModelUnavailableError(RetrievalError, _source.ModelUnavailableError):
    """Model weights are not reachable from this host: a service problem, not bad input."""

    http_status = 503


class EmbeddingCountError(InternalError, _source.EmbeddingCountError):
    """An embedding function returned a wrong number or shape of vectors."""


# A subclass of one of embedders' errors maps by its nearest listed base (see as_retrieval_error).
_MAPPING: dict[type[BaseException], type[RetrievalError]] = {
    _source.UnknownNameError: UnknownNameError,
    _source.ConfigError: ConfigError,
    _source.UnsupportedInputError: UnsupportedInputError,
    _source.LoadError: LoadError,
    _source.ModelUnavailableError: ModelUnavailableError,
    _source.EmbeddingCountError: EmbeddingCountError,
}
_SOURCE_ERRORS = tuple(_MAPPING)


def as_retrieval_error(error: BaseException) -> RetrievalError | None:
    """The retrieval error that stands for ``error``, or None when it needs no mapping.

    Args:
        error: any exception; only those of :mod:`embedders.errors` (and subclasses) are mapped.

    Example:
        >>> import embedders
        >>> e = as_retrieval_error(embedders.LoadError("cannot read 'memory://x'", uri="memory://x"))
        >>> type(e).__name__, e.uri, str(e)
        ('LoadError', 'memory://x', "cannot read 'memory://x'")
    """
    if isinstance(error, RetrievalError):
        return None
    for base in type(error).__mro__:
        target = _MAPPING.get(base)
        if target is None:
            continue
        if target is LoadError:
            return LoadError(str(error), uri=getattr(error, "uri", None))
        return target(str(error))
    return None


@contextlib.contextmanager
def component_errors() -> Iterator[None]:
    """Re-raise errors of ``embedders`` / ``loaders`` raised inside the block as retrieval errors."""
    try:
        yield
    except _SOURCE_ERRORS as e:
        mapped = as_retrieval_error(e)
        if mapped is None:  # already a retrieval error
            raise
        raise mapped from e


def maps_component_errors(fn: F) -> F:
    """Decorate a public ``Client`` / ``Collection`` method with :func:`component_errors`."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with component_errors():
            return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
