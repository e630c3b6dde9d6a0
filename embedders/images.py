"""Image input normalisation: every accepted image form becomes one RGB uint8 HxWx3 array.

Converting once, at the edge, means embedding functions only ever see one layout.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from embedders.errors import UnsupportedInputError

__all__ = ["ACCEPTED_IMAGES", "is_image", "to_rgb_uint8"]

ACCEPTED_IMAGES = (
    "a PIL.Image.Image, or a numpy array of dtype uint8 or float (values in [0, 1] or [0, 255]) "
    "shaped HxW, HxWx1, HxWx3 or HxWx4"
)


def _is_pil(obj: Any) -> bool:
    # Checked by name so that a caller who never uses PIL does not pay for importing it here.
    return any(
        c.__name__ == "Image" and c.__module__ == "PIL.Image" for c in type(obj).__mro__
    )


def is_image(obj: Any) -> bool:
    """True when ``obj`` looks like a single image (PIL image, or a 2-D/3-D numpy array).

    It does not validate dtype or channels; :func:`to_rgb_uint8` does.

    Example:
        >>> is_image(np.zeros((4, 4, 3), np.uint8)), is_image("a red circle")
        (True, False)
    """
    return _is_pil(obj) or (isinstance(obj, np.ndarray) and obj.ndim in (2, 3))


def to_rgb_uint8(image: Any) -> np.ndarray:
    """Convert an image to a C-contiguous RGB ``uint8`` array of shape ``(H, W, 3)``.

    Accepted: PIL images of any mode; numpy arrays of dtype ``uint8`` or floating point
    shaped ``HxW`` (grey), ``HxWx1`` (grey), ``HxWx3`` (RGB) or ``HxWx4`` (RGBA). Float arrays
    whose values all lie in ``[0, 1]`` are scaled by 255, otherwise they must lie in
    ``[0, 255]``; they are rounded to the nearest integer. Alpha is discarded, not
    composited (as ``PIL.Image.convert("RGB")`` does). A uint8 HxWx3 C-contiguous input is
    returned as is, without a copy.

    Args:
        image: The image.

    Returns:
        The RGB uint8 array.

    Raises:
        UnsupportedInputError: Any other type, dtype, shape, or out-of-range/NaN floats; the
            message names what was received and what is accepted.

    Example:
        >>> to_rgb_uint8(np.ones((2, 3), dtype=np.float32)).shape
        (2, 3, 3)
        >>> int(to_rgb_uint8(np.full((1, 1, 4), 0.5))[0, 0, 0])
        128
    """
    if _is_pil(image):
        return _from_pil(image)
    if not isinstance(image, np.ndarray):
        raise UnsupportedInputError(
            f"cannot use an object of type {type(image).__name__} as an image; "
            f"expected {ACCEPTED_IMAGES}"
        )
    arr = image
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 2:
        arr = arr[:, :, None]
    elif not (arr.ndim == 3 and arr.shape[2] in (3, 4)):
        raise UnsupportedInputError(
            f"cannot use an array of shape {image.shape} (dtype {image.dtype}) as an image; "
            f"expected {ACCEPTED_IMAGES}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise UnsupportedInputError(f"cannot use an empty image of shape {image.shape}")
    if arr.shape[2] == 4:
        arr = arr[:, :, :3]
    if arr.dtype == np.uint8:
        pass
    elif np.issubdtype(arr.dtype, np.floating):
        arr = _float_to_uint8(arr, image)
    else:
        raise UnsupportedInputError(
            f"cannot use an array of dtype {image.dtype} (shape {image.shape}) as an image; "
            f"expected {ACCEPTED_IMAGES} (for integer pixel values in [0, 255] use "
            f"arr.astype(np.uint8))"
        )
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return np.ascontiguousarray(arr)


def _float_to_uint8(arr: np.ndarray, original: np.ndarray) -> np.ndarray:
    if not np.isfinite(arr).all():
        raise UnsupportedInputError(
            f"image array (shape {original.shape}, dtype {original.dtype}) contains NaN or "
            "infinite values"
        )
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 255.0:
        raise UnsupportedInputError(
            f"float image values must lie in [0, 1] or [0, 255]; got range [{lo:g}, {hi:g}] "
            f"(shape {original.shape}, dtype {original.dtype})"
        )
    # [0, 1] is the usual float convention; anything above 1 means the [0, 255] scale.
    scale = 255.0 if hi <= 1.0 else 1.0
    return np.clip(np.rint(arr.astype(np.float64) * scale), 0, 255).astype(np.uint8)


def _from_pil(image: Any) -> np.ndarray:
    if image.width == 0 or image.height == 0:
        raise UnsupportedInputError(f"cannot use an empty image of size {image.size}")
    if image.mode == "P" and "transparency" in image.info:
        # Pillow warns when a palette image with transparency goes straight to RGB.
        image = image.convert("RGBA")
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))
