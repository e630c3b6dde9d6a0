"""A file's fingerprint: how a sync tells an edited photo from an unchanged one without reading it.

A fingerprint is what the filesystem's listing already says about a file: its size, its
modification time, and its own checksum or ETag where it keeps one (object stores: S3's
``ETag``, GCS's ``md5Hash``/``crc32c``; a local disk keeps none). Comparing one costs no
read and no decode.

**Where it is stored: reserved metadata keys of the record itself**, not a side table:

======================  =======  ==========================================================
``file``                str      the record's id (what every indexed record has carried)
``file_size``           int      bytes
``file_mtime``          float    modification time, seconds since 1970 (absent if unknown)
``file_checksum``       str      the filesystem's checksum/ETag (absent where it has none)
======================  =======  ==========================================================

Why metadata: (1) the fingerprint is written by the same ``upsert`` as the vector, in one
transaction, so a crash can never leave a new fingerprint beside an old vector (a rerun
just redoes what was in flight); (2) it reaches a server with ``--host`` and a Chroma
server alike, with no engine or wire change; (3) it survives reopening and backups with
the records; (4) people can filter on it (``{"file_size": {"$gt": 5_000_000}}``). A side
table would need a second transaction or a change to every backend. Keys beginning
``file_`` are therefore reserved: a CSV/Parquet list may not use them as column names.

Comparing: where both the stored and the current fingerprint carry a checksum, it
decides alone (a ``touch`` re-embeds nothing; a replacement with an *older* mtime is
still caught). Elsewhere a file has changed when its size or its mtime differ at all
(``!=``, not ``>``: a file replaced by an older copy has an older mtime). On a local disk
a same-size replacement that also keeps the exact mtime (``cp -p`` of an equally long
file) is the one change a sync cannot see without reading every file.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["FINGERPRINT_KEYS", "ID_KEY", "RESERVED_PREFIX", "Fingerprint"]

ID_KEY = "file"
SIZE_KEY, MTIME_KEY, CHECKSUM_KEY = "file_size", "file_mtime", "file_checksum"
FINGERPRINT_KEYS = (SIZE_KEY, MTIME_KEY, CHECKSUM_KEY)
RESERVED_PREFIX = "file_"

# fsspec backends name these differently; first match wins. "created" is memory://'s only time.
_MTIME_KEYS = ("mtime", "LastModified", "last_modified", "updated", "modified", "created")
_CHECKSUM_KEYS = ("ETag", "etag", "md5Hash", "md5", "content_md5", "checksum", "crc32c", "sha256")


@dataclass(frozen=True)
class Fingerprint:
    """Size, modification time and (where the filesystem keeps one) checksum of a file."""

    size: int
    mtime: float | None = None
    checksum: str | None = None

    @classmethod
    def from_info(cls, info: Mapping[str, Any]) -> Fingerprint:
        """From an fsspec ``info()`` / ``find(detail=True)`` entry.

        Example:
            >>> Fingerprint.from_info({"size": 10, "mtime": 1.5, "ETag": '"ab12"'})
            Fingerprint(size=10, mtime=1.5, checksum='ab12')
        """
        mtime = next((_seconds(info[k]) for k in _MTIME_KEYS if info.get(k) is not None), None)
        checksum = next((str(info[k]).strip('"') for k in _CHECKSUM_KEYS if info.get(k)), None)
        return cls(int(info.get("size") or 0), mtime, checksum)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> Fingerprint | None:
        """The fingerprint a record stores, or ``None`` if it stores none."""
        if not metadata or not isinstance(metadata.get(SIZE_KEY), int):
            return None
        mtime = metadata.get(MTIME_KEY)
        checksum = metadata.get(CHECKSUM_KEY)
        return cls(metadata[SIZE_KEY], float(mtime) if mtime is not None else None,
                   str(checksum) if checksum is not None else None)

    def to_metadata(self) -> dict[str, Any]:
        """The reserved keys; a missing mtime or checksum is ``None`` so an update drops a stale one."""
        return {SIZE_KEY: self.size, MTIME_KEY: self.mtime, CHECKSUM_KEY: self.checksum}

    def change_from(self, stored: Fingerprint) -> str | None:
        """Why the file differs from ``stored`` (a reason for the report), or ``None`` if it does not.

        Example:
            >>> Fingerprint(10, 2.0).change_from(Fingerprint(10, 1.0))
            'modification time changed'
            >>> Fingerprint(10, 1.0, "a").change_from(Fingerprint(10, 9.0, "a")) is None
            True
        """
        if self.checksum and stored.checksum:
            return None if self.checksum == stored.checksum else "checksum changed"
        if self.size != stored.size:
            return f"size changed ({stored.size} -> {self.size} bytes)"
        if self.mtime != stored.mtime:
            return "modification time changed"
        return None


def _seconds(value: Any) -> float | None:
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None
