"""The one exception hierarchy of retrieval.

Every error subclasses a builtin so ``except ValueError`` keeps working for code written
against chromadb, and carries an HTTP status so the server can map it without a table::

    RetrievalError
    ├── InvalidArgumentError (ValueError)       400  bad input; nothing was written
    │   ├── DimensionMismatchError               400  vector length differs from the collection's
    │   └── DuplicateIDError                     400  an id repeats inside one call
    ├── NotFoundError (LookupError, ValueError)  404  collection, tenant or database missing
    ├── UniqueConstraintError (ValueError)       409  collection name already taken
    ├── ConfigurationConflictError (ValueError)  409  stored configuration disagrees with arguments
    ├── PersistPathLockedError (RuntimeError)    423  another process owns the persist path
    ├── NotAllowedError (PermissionError)        403  e.g. ``reset()`` without ``allow_reset``
    │   └── AuthenticationError                  401  no credentials, or wrong ones (server auth)
    ├── RequestTooLargeError (ValueError)        413  a request body over the server's limit
    ├── RequestTimeoutError (TimeoutError)       408  a request body that arrived too slowly
    ├── ServerUnavailableError (ConnectionError) 503  an HTTP client cannot reach its server
    ├── NotSupportedError (NotImplementedError)  501  the server lacks the feature (forks; Search on chroma run)
    └── InternalError (RuntimeError)             500

Errors of ``embedders`` and ``loaders`` (which import nothing from retrieval) are re-raised at the
``Client`` / ``Collection`` boundary as the subclasses in :mod:`retrieval.component_errors`: an
``InvalidArgumentError`` that is still the original class (``LoadError``, ``UnknownNameError``...).
"""

from __future__ import annotations


class RetrievalError(Exception):
    """Base class of every error raised by retrieval."""

    http_status = 500

    @classmethod
    def name(cls) -> str:
        return cls.__name__


class InvalidArgumentError(RetrievalError, ValueError):
    http_status = 400


class DimensionMismatchError(InvalidArgumentError):
    http_status = 400


class DuplicateIDError(InvalidArgumentError):
    http_status = 400


class NotFoundError(RetrievalError, LookupError, ValueError):
    """Also a ValueError: chromadb before 1.0 raised ValueError for a missing collection."""

    http_status = 404


class UniqueConstraintError(RetrievalError, ValueError):
    http_status = 409


class ConfigurationConflictError(RetrievalError, ValueError):
    http_status = 409


class PersistPathLockedError(RetrievalError, RuntimeError):
    http_status = 423


class NotAllowedError(RetrievalError, PermissionError):
    http_status = 403


class AuthenticationError(NotAllowedError):
    """The server wants credentials and got none, or wrong ones."""

    http_status = 401


class RequestTooLargeError(RetrievalError, ValueError):
    http_status = 413


class RequestTimeoutError(RetrievalError, TimeoutError):
    http_status = 408


class ServerUnavailableError(RetrievalError, ConnectionError):
    """An HTTP client could not reach its server, or the request timed out."""

    http_status = 503


class NotSupportedError(RetrievalError, NotImplementedError):
    """The server does not have the feature: a 501, from ours or Chroma's.

    Raised by ``retrieval run`` for distributed-Chroma features a single-node server lacks (collection
    forks, attached functions, indexing status), and by the HTTP clients for any server's 501, e.g.
    ``search()`` against ``chroma run``, which serves no Search API. A ``NotImplementedError``, as
    chromadb's own local client raises for the same features.
    """

    http_status = 501


class InternalError(RetrievalError, RuntimeError):
    http_status = 500


# chromadb spells some of these differently; keep its names importable.
InvalidCollectionException = NotFoundError
IDAlreadyExistsError = UniqueConstraintError


def error_class(name: str) -> type[RetrievalError]:
    """Map an error class name (as sent over the wire) back to the class."""
    stack: list[type[RetrievalError]] = [RetrievalError]
    while stack:
        cls = stack.pop()
        if cls.__name__ == name:
            return cls
        stack.extend(cls.__subclasses__())
    return RetrievalError
