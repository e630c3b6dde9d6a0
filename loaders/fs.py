"""Reading a URI's bytes through fsspec, with errors that name the URI."""

from __future__ import annotations

from embedders.errors import LoadError

__all__ = ["read_bytes"]


def read_bytes(uri: str, *, what: str = "data") -> bytes:
    """Read all bytes at ``uri``: a local path, ``file://``, ``memory://``, ``http(s)://``, or
    any protocol of an installed fsspec implementation (``s3://`` with s3fs ...).

    Raises:
        LoadError: The URI cannot be opened or read; the message names it and the cause.

    Example:
        >>> import fsspec
        >>> with fsspec.open("memory://doc/b.bin", "wb") as f: _ = f.write(b"xy")
        >>> read_bytes("memory://doc/b.bin")
        b'xy'
    """
    import fsspec  # core dependency; imported on first read to keep `import loaders` light

    try:
        with fsspec.open(uri, "rb") as f:
            return f.read()
    except FileNotFoundError as exc:
        raise LoadError(f"cannot read {what} from {uri!r}: no such file", uri=uri) from exc
    except ImportError as exc:  # e.g. http(s) without aiohttp, s3 without s3fs
        raise LoadError(
            f"cannot read {what} from {uri!r}: its protocol needs a package that is not installed ({exc})",
            uri=uri,
        ) from exc
    except Exception as exc:  # noqa: BLE001 - fsspec backends raise many types; keep the cause
        raise LoadError(f"cannot read {what} from {uri!r}: {type(exc).__name__}: {exc}", uri=uri) from exc
