"""open_clip's image preprocessing, rebuilt for speed: same geometry, batched tensor maths.

open_clip's own ``preprocess`` is a torchvision ``Compose`` run on one PIL image at a time
in one Python thread (resize, crop, ToTensor, Normalize). :class:`Geometry` reproduces its
resize/crop/pad exactly (the same sizes, rounding and crop offsets, for every
``resize_mode``), so it can run:

* on PIL images inside the loader's decode threads (CPU hosts), after a JPEG *draft*
  decode at reduced scale (:meth:`Geometry.resize_size` says how small the decode may be);
* on uint8 tensors on the GPU (:func:`fit_tensor`), batched per image size.

Normalisation is then one fused multiply-add over the whole uint8 batch
(:meth:`Geometry.normalize`). The resulting vectors agree with open_clip's own
preprocessing to cosine >= 0.99 (``tests/test_pipeline.py``); the small differences come
from the draft decode (DCT scaling instead of a full decode) and, on the GPU, from
torch's antialiased bicubic instead of Pillow's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Geometry", "fit_tensor"]

_RESIZE_MODES = ("shortest", "longest", "squash")


@dataclass(frozen=True)
class Geometry:
    """Target size, resize mode and normalisation of an open_clip image tower.

    Args:
        size: Output ``(height, width)``.
        resize_mode: ``"shortest"`` (resize the short side, centre-crop), ``"longest"``
            (resize the long side, centre-pad with ``fill``) or ``"squash"`` (resize to size).
        interpolation: ``"bicubic"`` or ``"bilinear"``.
        mean: Per-channel mean, on the [0, 1] scale.
        std: Per-channel standard deviation.
        fill: Padding value (0-255) for ``"longest"``.

    Example:
        >>> g = Geometry.from_config({"size": 224, "mean": [0.5] * 3, "std": [0.5] * 3})
        >>> g.resize_size(640, 480)
        (298, 224)
    """

    size: tuple[int, int]
    resize_mode: str = "shortest"
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)
    fill: int = 0

    @staticmethod
    def from_config(cfg: Mapping[str, Any]) -> Geometry:
        """Build from open_clip's ``preprocess_cfg`` (``open_clip.get_model_preprocess_cfg``).

        Raises:
            ValueError: A resize mode or interpolation this module does not reproduce.
        """
        size = cfg.get("size", 224)
        size = (int(size), int(size)) if isinstance(size, (int, float)) else (int(size[0]), int(size[1]))
        mode = cfg.get("resize_mode") or "shortest"
        interpolation = cfg.get("interpolation") or "bicubic"
        if mode not in _RESIZE_MODES or interpolation not in ("bicubic", "bilinear"):
            raise ValueError(f"unsupported open_clip preprocess_cfg {dict(cfg)!r}")
        defaults = Geometry(size)

        def triple(value: Any, default: tuple[float, float, float]) -> tuple[float, float, float]:
            if value is None:
                return default
            if isinstance(value, (int, float)):
                return (float(value),) * 3  # type: ignore[return-value]
            return tuple(float(v) for v in value)  # type: ignore[return-value]

        fill = cfg.get("fill_color", 0)
        return Geometry(
            size=size,
            resize_mode=mode,
            interpolation=interpolation,
            mean=triple(cfg.get("mean"), defaults.mean),
            std=triple(cfg.get("std"), defaults.std),
            fill=int(fill if isinstance(fill, (int, float)) else 0),
        )

    # ------------------------------------------------------------ sizes
    def resize_size(self, width: int, height: int) -> tuple[int, int]:
        """The ``(width, height)`` an image of this size is resized to before crop/pad.

        Mirrors torchvision's ``Resize`` (square ``shortest``: ``int()`` truncation of the long
        side) and open_clip's ``ResizeKeepRatio`` (``round()``), so sizes match exactly.
        """
        th, tw = self.size
        if self.resize_mode == "squash":
            return tw, th
        if self.resize_mode == "shortest" and th == tw:
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(th * long / short)
            return (th, new_long) if width <= height else (new_long, th)
        ratio_h, ratio_w = height / th, width / tw
        ratio = max(ratio_h, ratio_w) if self.resize_mode == "longest" else min(ratio_h, ratio_w)
        return max(1, round(width / ratio)), max(1, round(height / ratio))

    def crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """``(left, top, right, bottom)`` of the centre crop (or pad, when negative) after resize.

        torchvision's ``center_crop``: offsets are ``int(round((size - crop) / 2))``; when the
        image is smaller, it is first padded ``(crop - size) // 2`` before and the rest after.
        """
        th, tw = self.size

        def offset(size: int, crop: int) -> int:
            if size < crop:  # padded first: floor of half the padding goes before
                return -((crop - size) // 2)
            return int(round((size - crop) / 2.0))

        left, top = offset(width, tw), offset(height, th)
        return left, top, left + tw, top + th

    # ------------------------------------------------------------ PIL (CPU decode threads)
    def fit_pil(self, image: Any) -> Any:
        """Resize and crop/pad a PIL image exactly as open_clip's transform does.

        Example:
            >>> from PIL import Image
            >>> Geometry((64, 64)).fit_pil(Image.new("RGB", (100, 80))).size
            (64, 64)
        """
        from PIL import Image

        resample = Image.BICUBIC if self.interpolation == "bicubic" else Image.BILINEAR
        new = self.resize_size(*image.size)
        if new != image.size:
            image = image.resize(new, resample)
        left, top, right, bottom = self.crop_box(*image.size)
        if (left, top) == (0, 0) and (right, bottom) == image.size:
            return image
        if left >= 0 and top >= 0:
            return image.crop((left, top, right, bottom))
        canvas = Image.new(image.mode, (right - left, bottom - top), (self.fill,) * len(image.getbands()))
        canvas.paste(image, (-left, -top))
        return canvas

    def fit_array(self, image: np.ndarray) -> np.ndarray:
        """:meth:`fit_pil` for an RGB uint8 HxWx3 array (returns the same layout)."""
        from PIL import Image

        if image.shape[:2] == self.size:
            # Squash/shortest/longest of an image already at the target size change nothing.
            return image
        return np.asarray(self.fit_pil(Image.fromarray(image)), dtype=np.uint8)

    # ------------------------------------------------------------ tensors
    def normalize(self, batch: Any, dtype: Any = None, *, channels_last: bool = False) -> Any:
        """uint8 (or [0, 255] float) ``NxCxHxW`` tensor -> normalised float ``NxCxHxW`` (one fused op).

        ``channels_last=True`` takes ``NxHxWxC`` (a stack of decoded arrays) instead.

        ``(x / 255 - mean) / std`` becomes ``x * a + b`` per channel, computed in float32 and
        cast to ``dtype`` (fp16/bf16 on GPU) at the end.
        """
        import torch

        if channels_last:
            batch = batch.permute(0, 3, 1, 2)
        mean = torch.tensor(self.mean, device=batch.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=batch.device).view(1, 3, 1, 1)
        out = torch.addcmul(-mean / std, batch.float(), 1.0 / (255.0 * std))
        return out if dtype is None else out.to(dtype)


def fit_tensor(images: Sequence[Any], geometry: Geometry) -> Any:
    """Resize and crop/pad uint8 ``CxHxW`` tensors (any device) into one uint8-range float batch.

    Images of the same size are resized together in one ``interpolate`` call (the usual
    case: a folder of same-size photos). Antialiased bicubic matches Pillow's filter closely.

    Args:
        images: uint8 tensors ``3xHxW``, all on one device.
        geometry: The target geometry.

    Returns:
        A float32 ``Nx3xHxW`` tensor of values in [0, 255], in input order.
    """
    import torch

    th, tw = geometry.size
    device = images[0].device
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault((int(im.shape[1]), int(im.shape[2])), []).append(i)
    mode = "bicubic" if geometry.interpolation == "bicubic" else "bilinear"
    pieces: list[tuple[list[int], Any]] = []
    for (h, w), members in groups.items():
        # Bounded float working set: 256 full-size 12 MP photos would need 36 GB as floats.
        step = max(1, _FLOAT_BUDGET // (3 * h * w * 4))
        for start in range(0, len(members), step):
            part = members[start:start + step]
            pieces.append((part, _fit_group([images[i] for i in part], h, w, geometry, mode)))
    if len(pieces) == 1:
        return pieces[0][1]  # the usual case (one size, one piece): no scatter
    out = torch.empty((len(images), 3, th, tw), dtype=torch.float32, device=device)
    for members, piece in pieces:
        out[torch.tensor(members, device=device)] = piece
    return out


_FLOAT_BUDGET = 1 << 30  # bytes of float pixels resized at once


def _fit_group(images: Sequence[Any], h: int, w: int, geometry: Geometry, mode: str) -> Any:
    import torch
    import torch.nn.functional as F

    th, tw = geometry.size
    batch = torch.stack(list(images)).float()
    new_w, new_h = geometry.resize_size(w, h)
    if (new_h, new_w) != (h, w):
        batch = F.interpolate(batch, size=(new_h, new_w), mode=mode, antialias=True, align_corners=False)
        batch = batch.clamp_(0, 255)
    left, top, right, bottom = geometry.crop_box(new_w, new_h)
    if left < 0 or top < 0:
        pad = (max(0, -left), max(0, right - new_w), max(0, -top), max(0, bottom - new_h))
        batch = F.pad(batch, pad, value=float(geometry.fill))
        left, top = max(0, left), max(0, top)
    return batch[:, :, top:top + th, left:left + tw].contiguous()
