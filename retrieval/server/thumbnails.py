"""Safe local-file access for the web page: which stored URIs may be read, and their thumbnails.

The page shows images by asking the server for a record's thumbnail. The URI comes from the
record, but anyone allowed to write records chooses it, so it is untrusted: ``../../etc/passwd``,
``/etc/shadow``, a symlink planted inside a photo folder that points outside it,
``file:///root/.ssh/id_rsa`` or ``http://127.0.0.1:8080/admin`` (server-side request forgery).
:func:`resolve_local_image` is the single gate. It accepts a URI only when all of these hold:

- it is a local path (plain, or ``file://`` with no host); every other scheme is refused, so the
  server never makes a network request on behalf of the page;
- it has no ``..`` segment (even one that would land back inside a root: the intent is suspect);
- its real path, with every symlink resolved, lies inside one of the operator's roots;
- it is a regular file.

Thumbnails are decoded with Pillow's decompression-bomb guard in force, resized to fit a square,
and cached in memory (bounded) under an ETag derived from the file's identity and mtime.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import warnings
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence
from urllib.parse import unquote, urlsplit

from retrieval.errors import InvalidArgumentError, NotAllowedError, NotFoundError

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")


def resolve_local_image(uri: str, roots: Sequence[Path]) -> Path:
    """The real path of a stored image URI, or ``NotAllowedError`` saying why it may not be read.

    Args:
        uri: the URI as stored with the record (or typed into the page for a URI query).
        roots: resolved folders the operator allowed (``UiConfig.thumbnail_roots``).

    Example:
        >>> resolve_local_image("http://127.0.0.1/x.png", [Path("/tmp")])
        Traceback (most recent call last):
        ...
        retrieval.errors.NotAllowedError: refusing URI 'http://127.0.0.1/x.png': ...
    """
    if not isinstance(uri, str) or not uri or "\x00" in uri:
        raise InvalidArgumentError(f"an image URI must be a non-empty string without NUL bytes; got {uri!r}")
    if not roots:
        raise NotAllowedError(
            f"refusing URI {uri!r}: the server reads no image files (no ui.thumbnail_roots in its config)"
        )
    path_text = _local_path(uri)
    if ".." in re.split(r"[/\\]", path_text):
        raise NotAllowedError(f"refusing URI {uri!r}: '..' segments are not allowed")
    real = Path(os.path.realpath(os.path.abspath(path_text)))
    if not any(real == root or real.is_relative_to(root) for root in roots):
        raise NotAllowedError(
            f"refusing URI {uri!r}: it resolves to {str(real)!r}, outside the allowed folders "
            f"{[str(r) for r in roots]} (symlinks are followed before this check)"
        )
    if not real.is_file():
        raise NotFoundError(f"image {uri!r} does not exist (or is not a regular file) under the allowed folders")
    return real


def _local_path(uri: str) -> str:
    match = _SCHEME.match(uri)
    if match is None or len(match.group(1)) == 1:  # a bare path (a one-letter 'scheme' is a drive)
        return uri
    if match.group(1).lower() != "file":
        raise NotAllowedError(
            f"refusing URI {uri!r}: only local image files are served, not {match.group(1)!r} URIs "
            "(the server never fetches remote or network URIs for the page)"
        )
    parts = urlsplit(uri)
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise NotAllowedError(f"refusing URI {uri!r}: a file:// URI must name a local path (no host, query or fragment)")
    return unquote(parts.path)


@dataclass(frozen=True)
class Thumbnail:
    """An encoded thumbnail and what HTTP caching needs."""

    body: bytes
    media_type: str
    etag: str
    last_modified: float


class Thumbnailer:
    """Renders and caches thumbnails (thread-safe: page requests run in a thread pool).

    Args:
        size: the longest side of a thumbnail, in pixels.
        cache_bytes: memory budget of the rendered-thumbnail cache (least recently used goes first).
        max_pixels: refuse images with more pixels than this before decoding them.
    """

    def __init__(self, size: int = 256, cache_bytes: int = 32 * 1024 * 1024, max_pixels: int | None = None):
        self.size = size
        self.cache_bytes = cache_bytes
        self.max_pixels = max_pixels
        self._cache: OrderedDict[str, Thumbnail] = OrderedDict()
        self._used = 0
        self._lock = threading.Lock()

    def etag(self, path: Path) -> tuple[str, float]:
        """The ETag of ``path``'s thumbnail at this size, and the file's mtime (cheap: one stat)."""
        st = path.stat()
        digest = hashlib.sha256(f"{path}\0{st.st_mtime_ns}\0{st.st_size}\0{self.size}".encode()).hexdigest()
        return f'"{digest[:24]}"', st.st_mtime

    def render(self, path: Path) -> Thumbnail:
        """The thumbnail of an image file already vetted by :func:`resolve_local_image`."""
        etag, mtime = self.etag(path)
        with self._lock:
            hit = self._cache.get(etag)
            if hit is not None:
                self._cache.move_to_end(etag)
                return hit
        thumb = Thumbnail(self._encode(path), "image/webp", etag, mtime)
        with self._lock:
            if etag not in self._cache and len(thumb.body) <= self.cache_bytes:
                self._cache[etag] = thumb
                self._used += len(thumb.body)
                while self._used > self.cache_bytes:
                    _, old = self._cache.popitem(last=False)
                    self._used -= len(old.body)
        return thumb

    def _encode(self, path: Path) -> bytes:
        from PIL import Image, ImageOps

        try:
            with warnings.catch_warnings():
                # Pillow only warns between MAX_IMAGE_PIXELS and twice that; treat it as the bomb it is.
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                with Image.open(path) as img:
                    if self.max_pixels is not None and img.width * img.height > self.max_pixels:
                        raise InvalidArgumentError(
                            f"image {str(path)!r} has {img.width}x{img.height} pixels, over the limit of {self.max_pixels}"
                        )
                    img.draft("RGB", (self.size, self.size))  # JPEG: decode at reduced scale
                    img = ImageOps.exif_transpose(img)
                    img = img.convert("RGBA" if _has_alpha(img) else "RGB")
                    img.thumbnail((self.size, self.size), Image.Resampling.LANCZOS)
                    out = io.BytesIO()
                    img.save(out, format="WEBP", quality=85, method=4)
                    return out.getvalue()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise InvalidArgumentError(f"image {str(path)!r} is too large to thumbnail: {e}") from e
        except (OSError, SyntaxError, ValueError) as e:
            if isinstance(e, InvalidArgumentError):
                raise
            raise InvalidArgumentError(f"file {str(path)!r} is not a readable image: {e}") from e


def _has_alpha(img) -> bool:
    return img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
