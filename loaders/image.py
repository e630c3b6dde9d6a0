"""``ImageLoader``: read a URI (any fsspec protocol) and decode it to RGB uint8 HxWx3."""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from embedders.errors import ConfigError, LoadError
from embedders.images import to_rgb_uint8
from loaders.base import BaseDataLoader
from loaders.fs import read_bytes

__all__ = ["DEFAULT_MAX_PIXELS", "ImageLoader"]

#: Pillow's own default ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class ImageLoader(BaseDataLoader):
    """Load images from URIs in a thread pool, as RGB uint8 arrays of shape (H, W, 3).

    The decompression-bomb guard is kept: an image with more than ``max_pixels`` pixels is
    refused before it is decoded. Pillow's process-wide ``PIL.Image.MAX_IMAGE_PIXELS`` guard
    also stays in force (this loader never changes it), so a ``max_pixels`` above it only
    takes effect once that is raised too. EXIF orientation is applied; alpha is dropped.

    Args:
        max_pixels: Largest accepted width x height (persisted with the collection).
        max_workers: Decoding threads (host option, not persisted); ``None`` = Python's default.

    Example:
        >>> import fsspec, io
        >>> from PIL import Image
        >>> buf = io.BytesIO(); Image.new("RGB", (6, 4), "blue").save(buf, "PNG")
        >>> with fsspec.open("memory://doc/blue.png", "wb") as f: _ = f.write(buf.getvalue())
        >>> [im.shape for im in ImageLoader()(["memory://doc/blue.png"])]
        [(4, 6, 3)]
    """

    CONFIG_KEYS = ("max_pixels",)

    def __init__(self, max_pixels: int = DEFAULT_MAX_PIXELS, max_workers: int | None = None) -> None:
        if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
            raise ConfigError(
                f"max_pixels must be a positive integer; got {max_pixels!r} (the decompression-bomb "
                f"guard cannot be switched off; pass a larger limit, e.g. {DEFAULT_MAX_PIXELS})"
            )
        self.max_pixels = max_pixels
        super().__init__(max_workers=max_workers)

    @staticmethod
    def name() -> str:
        return "image"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> ImageLoader:
        """Rebuild from :meth:`get_config` output.

        Example:
            >>> ImageLoader.build_from_config({"max_pixels": 1000}).max_pixels
            1000
        """
        return ImageLoader._from_config(config)

    def _load_one(self, uri: str) -> np.ndarray:
        data = read_bytes(uri, what="image")
        return self.decode(data, uri=uri)

    def decode(self, data: bytes, *, uri: str = "<bytes>") -> np.ndarray:
        """Decode encoded image bytes (PNG, JPEG, ...) under this loader's pixel limit.

        Example:
            >>> from PIL import Image
            >>> buf = io.BytesIO(); Image.new("L", (3, 2)).save(buf, "PNG")
            >>> ImageLoader().decode(buf.getvalue()).shape
            (2, 3, 3)
        """
        from PIL import Image, ImageOps, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as img:
                width, height = img.size
                if width * height > self.max_pixels:
                    raise LoadError(
                        f"image {uri!r} is {width}x{height} = {width * height} pixels, more than "
                        f"max_pixels={self.max_pixels} (a decompression-bomb guard); if you trust "
                        "it, use ImageLoader(max_pixels=...) with a larger limit",
                        uri=uri,
                    )
                return to_rgb_uint8(ImageOps.exif_transpose(img))
        except LoadError:
            raise
        except Image.DecompressionBombError as exc:
            raise LoadError(
                f"image {uri!r} exceeds Pillow's process-wide decompression-bomb limit "
                f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}: {exc} (if you trust it, "
                "raise that limit as well as this loader's max_pixels)",
                uri=uri,
            ) from exc
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
            raise LoadError(
                f"cannot decode {uri!r} as an image: {type(exc).__name__}: {exc}", uri=uri
            ) from exc
