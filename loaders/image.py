"""``ImageLoader``: read a URI (any fsspec protocol) and decode it to RGB uint8 HxWx3."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, NamedTuple, Protocol

import numpy as np

from embedders.errors import ConfigError, LoadError
from embedders.images import to_rgb_uint8
from loaders.base import BaseDataLoader
from loaders.fs import read_bytes

__all__ = ["DEFAULT_MAX_PIXELS", "EncodedImage", "Fit", "ImageHeader", "ImageLoader"]

#: ``on_open(uri, image)``: sees each opened Pillow image before it is decoded.
OnOpen = Callable[[str, Any], None]

# EXIF orientations that swap width and height (transpose / rotate 90 / transverse / rotate 270).
_SWAPS_AXES = (5, 6, 7, 8)

#: Pillow's own default ``PIL.Image.MAX_IMAGE_PIXELS`` (about 89.5 megapixels).
DEFAULT_MAX_PIXELS = 1024 * 1024 * 1024 // 4 // 3


class Fit(Protocol):
    """Where decoded images are headed: lets the loader decode small and resize in its threads.

    ``embedders.preprocess.Geometry`` is one (the open_clip image tower's resize and crop).
    """

    def resize_size(self, width: int, height: int) -> tuple[int, int]: ...

    def fit_pil(self, image: Any) -> Any: ...


class ImageHeader(NamedTuple):
    """What :meth:`ImageLoader.probe` reads from an image's header without decoding it."""

    format: str | None
    width: int
    height: int
    mode: str
    orientation: int


class EncodedImage(NamedTuple):
    """An image's URI, its encoded bytes and its parsed header (see :meth:`ImageLoader.fetch`)."""

    uri: str
    data: bytes
    header: ImageHeader


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

    # ------------------------------------------------------------ fast paths for embedders
    def load(
        self,
        uris: Sequence[str],
        *,
        fit: Fit | None = None,
        on_error: Callable[[str, LoadError], Any] | None = None,
        on_open: OnOpen | None = None,
    ) -> list[np.ndarray]:
        """Read and decode ``uris`` on all cores, optionally straight to a model's input size.

        With ``fit``, a JPEG is decoded in *draft* mode (libjpeg's DCT scaling, 1/2 to 1/8)
        at the smallest scale that still covers the size ``fit`` resizes it to, and the
        resize/crop runs in the same worker thread; a 12-megapixel photo headed for a 224px
        model then costs a fraction of a full decode. Pillow releases the GIL while it
        decodes and resizes, so threads use every core without pickling pixels.

        Args:
            uris: Image URIs (no ``None``).
            fit: Target geometry, e.g. ``embedders.preprocess.Geometry``; ``None`` = full size.
            on_error: Instead of raising, put ``on_error(uri, error)`` in place of a URI that
                fails (a batch job that skips bad files and reports them).
            on_open: Called as ``on_open(uri, image)`` with each opened Pillow image before it
                is decoded, in a worker thread: read its size or EXIF
                (``loaders.photo_metadata``) without reading the file twice.

        Returns:
            RGB uint8 arrays, in order.

        Raises:
            LoadError: The first URI (in order) that cannot be read or decoded, named.

        Example:
            >>> import fsspec
            >>> from PIL import Image
            >>> from embedders.preprocess import Geometry
            >>> buf = io.BytesIO(); Image.new("RGB", (640, 480), "red").save(buf, "JPEG")
            >>> with fsspec.open("memory://doc/red.jpg", "wb") as f: _ = f.write(buf.getvalue())
            >>> ImageLoader().load(["memory://doc/red.jpg"], fit=Geometry((224, 224)))[0].shape
            (224, 224, 3)
        """
        def one(uri: str) -> np.ndarray:
            return self.decode(read_bytes(uri, what="image"), uri=uri, fit=fit, on_open=on_open)

        return self._map(one, uris, on_error)

    def fetch(
        self,
        uris: Sequence[str],
        *,
        on_error: Callable[[str, LoadError], Any] | None = None,
        on_open: OnOpen | None = None,
    ) -> list[EncodedImage]:
        """Read ``uris`` in parallel and parse their headers, without decoding pixels.

        For decoders outside Pillow (nvJPEG on a GPU): the pixel limit and the "not an
        image" check still happen here, in the loader, with its error messages.

        Args:
            uris: Image URIs.
            on_error: As in :meth:`load`.
            on_open: As in :meth:`load` (called with the image whose header is parsed).

        Raises:
            LoadError: The first URI (in order) that is unreadable, not an image or too large.
        """

        def one(uri: str) -> EncodedImage:
            data = read_bytes(uri, what="image")
            return EncodedImage(uri, data, self.probe(data, uri=uri, on_open=on_open))

        return self._map(one, uris, on_error)

    def probe(self, data: bytes, *, uri: str = "<bytes>", on_open: OnOpen | None = None) -> ImageHeader:
        """Parse an image's header (no pixel decoding) and apply the pixel limit.

        A decoder that bypasses Pillow (nvJPEG on a GPU) calls this first, so the
        decompression-bomb guard and the "not an image" error stay the loader's.

        Raises:
            LoadError: Not an image, or more pixels than ``max_pixels``; names ``uri``.

        Example:
            >>> from PIL import Image
            >>> buf = io.BytesIO(); Image.new("RGB", (6, 4)).save(buf, "JPEG")
            >>> ImageLoader().probe(buf.getvalue())[:3]
            ('JPEG', 6, 4)
        """
        with _pillow_errors(uri):
            from PIL import Image

            with Image.open(io.BytesIO(data)) as img:
                self._check_pixels(img, uri)
                if on_open is not None:
                    on_open(uri, img)
                orientation = img.getexif().get(0x0112, 1) if img.format == "JPEG" else 1
                return ImageHeader(img.format, img.size[0], img.size[1], img.mode, int(orientation or 1))

    def _map(
        self, fn: Callable[[str], Any], uris: Sequence[str], on_error: Callable[[str, LoadError], Any] | None = None
    ) -> list[Any]:
        uris = list(uris)
        if on_error is not None:
            strict = fn

            def fn(uri: str) -> Any:
                try:
                    return strict(uri)
                except LoadError as exc:
                    return on_error(uri, exc)

        if len(uris) <= 1 or self.max_workers == 1:
            return [fn(u) for u in uris]
        workers = min(len(uris), self.max_workers or min(32, (os.cpu_count() or 1) + 4))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="image-loader") as pool:
            return list(pool.map(fn, uris))  # in order; re-raises the first failure in order

    # ------------------------------------------------------------ decoding
    def decode(
        self, data: bytes, *, uri: str = "<bytes>", fit: Fit | None = None, on_open: OnOpen | None = None
    ) -> np.ndarray:
        """Decode encoded image bytes (PNG, JPEG, ...) under this loader's pixel limit.

        Args:
            data: The encoded image.
            uri: Named in errors.
            fit: Resize/crop to a model's input (see :meth:`load`); ``None`` = full size.
            on_open: See :meth:`load`.

        Example:
            >>> from PIL import Image
            >>> buf = io.BytesIO(); Image.new("L", (3, 2)).save(buf, "PNG")
            >>> ImageLoader().decode(buf.getvalue()).shape
            (2, 3, 3)
        """
        from PIL import Image, ImageOps

        with _pillow_errors(uri):
            with Image.open(io.BytesIO(data)) as img:
                self._check_pixels(img, uri)
                if on_open is not None:  # before draft(), which shrinks img.size
                    on_open(uri, img)
                if fit is None:
                    return to_rgb_uint8(ImageOps.exif_transpose(img))
                if img.format == "JPEG":
                    _draft(img, fit)
                img = ImageOps.exif_transpose(img)
                if img.mode != "RGB":
                    img = Image.fromarray(to_rgb_uint8(img))  # one conversion rule for every mode
                img.load()  # decode now, so a truncated file fails here, with its URI
                return np.asarray(fit.fit_pil(img), dtype=np.uint8)

    def _check_pixels(self, img: Any, uri: str) -> None:
        width, height = img.size
        if width * height > self.max_pixels:
            raise LoadError(
                f"image {uri!r} is {width}x{height} = {width * height} pixels, more than "
                f"max_pixels={self.max_pixels} (a decompression-bomb guard); if you trust "
                "it, use ImageLoader(max_pixels=...) with a larger limit",
                uri=uri,
            )


def _draft(img: Any, fit: Fit) -> None:
    """Ask libjpeg for the smallest DCT scale whose output still covers the resize target."""
    width, height = img.size
    orientation = img.getexif().get(0x0112, 1)
    if orientation in _SWAPS_AXES:  # the target applies to the image as it will be shown
        tw, th = fit.resize_size(height, width)
        tw, th = th, tw
    else:
        tw, th = fit.resize_size(width, height)
    img.draft("RGB", (max(1, tw), max(1, th)))


@contextmanager
def _pillow_errors(uri: str) -> Iterator[None]:
    """Turn Pillow's many failure types into one :class:`LoadError` naming the URI."""
    from PIL import Image, UnidentifiedImageError

    try:
        yield
    except LoadError:
        raise
    except Image.DecompressionBombError as exc:
        raise LoadError(
            f"image {uri!r} exceeds Pillow's process-wide decompression-bomb limit "
            f"PIL.Image.MAX_IMAGE_PIXELS={Image.MAX_IMAGE_PIXELS}: {exc} (if you trust it, "
            "raise that limit as well as this loader's max_pixels)",
            uri=uri,
        ) from exc
    except UnidentifiedImageError as exc:  # its message names a BytesIO object, not the file
        raise LoadError(
            f"cannot decode {uri!r} as an image: not a format Pillow can read (is it an image file?)", uri=uri
        ) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise LoadError(
            f"cannot decode {uri!r} as an image: {type(exc).__name__}: {exc}", uri=uri
        ) from exc
