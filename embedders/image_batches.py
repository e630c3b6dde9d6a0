"""Images (arrays or URIs) -> model-ready pixel batches, on every core or on the GPU.

Two routes, picked by the model's device:

* **CPU**: the loader decodes JPEGs in draft mode and resizes/crops in its worker threads
  (:meth:`loaders.ImageLoader.load` with a ``fit``); arrays are resized in this module's
  thread pool. The uint8 batch is normalised in one fused op.
* **GPU** (CUDA): file bytes are read and their headers checked on the CPU (pixel limit,
  "not an image"), JPEGs are decoded by nvJPEG in one batched call
  (``torchvision.io.decode_jpeg(list, device="cuda")``), anything else, or anything nvJPEG
  refuses, is decoded by Pillow on the CPU. uint8 pixels travel to the GPU (from pinned
  memory), where resize, crop, normalise and the cast to fp16 happen, batched per image
  size, on a side stream so the next batch is prepared while this one is encoded.

:func:`encode_overlapped` runs the model over prepared batches coming from a prefetching
thread (:func:`embedders.pipeline.prefetch_map`), so reading, decoding, transfer and
encoding overlap. Loaders are duck-typed (``load`` / ``fetch``): ``embedders`` does not
import ``loaders``; any chromadb-style loader still works through its ``__call__``.
"""

from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from embedders.images import to_rgb_uint8
from embedders.preprocess import Geometry, fit_tensor

__all__ = ["ImageBatcher", "Prepared", "encode_overlapped"]


class Prepared:
    """A pixel batch on the model's device, plus the CUDA event that marks it ready."""

    __slots__ = ("event", "pixels")

    def __init__(self, pixels: Any, event: Any = None) -> None:
        self.pixels = pixels
        self.event = event

    def __len__(self) -> int:
        return int(self.pixels.shape[0])

    def take(self) -> Any:
        """The pixels, made safe to use on the current stream (waits for the side stream)."""
        if self.event is not None:
            import torch

            stream = torch.cuda.current_stream(self.pixels.device)
            stream.wait_event(self.event)
            self.pixels.record_stream(stream)  # the allocator must not reuse it too early
        return self.pixels


class ImageBatcher:
    """Prepares batches of images for one model: decode, resize, crop, normalise.

    Args:
        geometry: The image tower's input geometry (see :class:`embedders.preprocess.Geometry`).
        device: The model's ``torch.device``.
        dtype: Pixel dtype handed to the model (fp16 on CUDA).
        tensor_ops: Resize on tensors (the GPU route) instead of with Pillow; default: on
            CUDA only. Tests force it on a CPU to check the GPU maths against open_clip.
        workers: CPU threads for resizing arrays and fallback decodes; default: all cores.

    Example:
        >>> import torch
        >>> b = ImageBatcher(Geometry((64, 64)), torch.device("cpu"))
        >>> b.from_arrays([np.zeros((480, 640, 3), np.uint8)]).pixels.shape
        torch.Size([1, 3, 64, 64])
    """

    def __init__(
        self,
        geometry: Geometry,
        device: Any,
        dtype: Any = None,
        *,
        tensor_ops: bool | None = None,
        workers: int | None = None,
    ) -> None:
        self.geometry = geometry
        self.device = device
        self.dtype = dtype
        self.cuda = device.type == "cuda"
        self.tensor_ops = self.cuda if tensor_ops is None else tensor_ops
        self.workers = workers or os.cpu_count() or 1
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._stream: Any = None

    # ------------------------------------------------------------ entry points
    def from_arrays(self, images: Sequence[Any]) -> Prepared:
        """A batch from in-memory images (arrays or PIL images, any accepted layout)."""
        arrays = [to_rgb_uint8(im) for im in images]
        if not self.tensor_ops:
            fitted = self._map(self.geometry.fit_array, arrays)
            return Prepared(self._normalize_hwc(np.stack(fitted)))
        return self._on_device(lambda: self._fit_on_device(self._upload(arrays)))

    def from_uris(self, uris: Sequence[str], loader: Callable[[Sequence[str]], Sequence[Any]]) -> Prepared:
        """A batch read and decoded from ``uris`` by ``loader``.

        Raises:
            LoadError: A URI could not be loaded or decoded (the loader's error, naming it).
        """
        from embedders.pipeline import check_loaded

        uris = list(uris)
        if self.tensor_ops and hasattr(loader, "fetch"):
            # The GPU route. On a CPU (tests) decode_jpeg decodes with libjpeg instead of nvJPEG.
            encoded = loader.fetch(uris)  # type: ignore[attr-defined]
            return self._on_device(lambda: self._fit_on_device(self._decode_on_gpu(encoded, loader)))
        if not self.tensor_ops and hasattr(loader, "load"):
            fitted = loader.load(uris, fit=self.geometry)  # type: ignore[attr-defined]
            check_loaded(uris, fitted)
            return Prepared(self._normalize_hwc(np.stack(fitted)))
        images = loader(uris)
        check_loaded(uris, images)
        return self.from_arrays(images)

    # ------------------------------------------------------------ CPU helpers
    def _normalize_hwc(self, batch: np.ndarray) -> Any:
        import torch

        pixels = torch.from_numpy(batch)
        if self.cuda:  # a CPU-resized batch headed for a GPU: pinned, so the copy is async
            pixels = pixels.pin_memory().to(self.device, non_blocking=True)
        return self.geometry.normalize(pixels, self.dtype, channels_last=True)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        if len(items) <= 1 or self.workers == 1:
            return [fn(x) for x in items]
        with self._pool_lock:
            if self._pool is None:  # kept for the batcher's life: batches come in quick succession
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="image-batches")
        return list(self._pool.map(fn, items))

    # ------------------------------------------------------------ tensor / GPU helpers
    def _on_device(self, build: Callable[[], Any]) -> Prepared:
        """Run ``build`` on a side CUDA stream (or directly on a CPU) and mark when it is done."""
        if not self.cuda:
            return Prepared(build())
        import torch

        if self._stream is None:
            self._stream = torch.cuda.Stream(self.device)
        with torch.cuda.stream(self._stream):
            pixels = build()
            event = torch.cuda.Event()
            event.record(self._stream)
        return Prepared(pixels, event)

    def _upload(self, arrays: Sequence[np.ndarray]) -> list[Any]:
        """uint8 HxWx3 arrays -> 3xHxW uint8 tensors on the device; one copy per image size."""
        import torch

        out: list[Any] = [None] * len(arrays)
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, a in enumerate(arrays):
            groups.setdefault(a.shape, []).append(i)
        for shape, members in groups.items():
            if self.cuda:
                # Copy each image once, straight into pinned memory (in parallel: numpy releases
                # the GIL), rather than stack and then pin: half the memory traffic.
                host = torch.empty((len(members), *shape), dtype=torch.uint8, pin_memory=True)
                view = host.numpy()
                self._map(lambda j: np.copyto(view[j], arrays[members[j]]), range(len(members)))
                stacked = host.to(self.device, non_blocking=True)
            else:
                stacked = torch.from_numpy(np.stack([arrays[i] for i in members]))
            stacked = stacked.permute(0, 3, 1, 2)
            for j, i in enumerate(members):
                out[i] = stacked[j]
        return out

    def _fit_on_device(self, images: Sequence[Any]) -> Any:
        return self.geometry.normalize(fit_tensor(images, self.geometry), self.dtype)

    def _decode_on_gpu(self, encoded: Sequence[Any], loader: Any) -> list[Any]:
        """nvJPEG for plain JPEGs in one batched call; Pillow (CPU threads) for the rest."""
        jpeg = [i for i, e in enumerate(encoded) if _nvjpeg_can_take(e)]
        out: list[Any] = [None] * len(encoded)
        if jpeg:
            decoded = _nvjpeg([encoded[i].data for i in jpeg], self.device)
            for i, tensor in zip(jpeg, decoded):
                out[i] = tensor
        rest = [i for i, t in enumerate(out) if t is None]
        if rest:
            # Pillow decodes (draft mode, resized to the target in its threads) what nvJPEG
            # cannot; a file Pillow cannot decode either raises the loader's error here.
            arrays = self._map(lambda i: loader.decode(encoded[i].data, uri=encoded[i].uri, fit=self.geometry), rest)
            for i, tensor in zip(rest, self._upload(arrays)):
                out[i] = tensor
        return out


def _nvjpeg_can_take(item: Any) -> bool:
    """Baseline RGB/grey JPEGs with no EXIF rotation and an end-of-image marker.

    A truncated JPEG has no EOI marker; nvJPEG may decode it to grey without complaint,
    where Pillow raises, so it goes to Pillow and fails with the loader's error.
    """
    h = item.header
    return (
        h.format == "JPEG"
        and h.mode in ("RGB", "L")
        and h.orientation == 1
        and item.data.rstrip(b"\x00")[-2:] == b"\xff\xd9"
    )


def _nvjpeg(datas: Sequence[bytes], device: Any) -> list[Any]:
    """Batched nvJPEG decode; per image on failure, ``None`` where nvJPEG refuses a file."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in datas]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision's deprecation notice on its decoders
        try:
            return list(decode_jpeg(tensors, device=device, mode=ImageReadMode.RGB))
        except (RuntimeError, ValueError):  # nvJPEG's refusals surface as either
            out: list[Any] = []
            for t in tensors:  # find the one it refuses; the others still go to the GPU
                try:
                    out.append(decode_jpeg(t, device=device, mode=ImageReadMode.RGB))
                except (RuntimeError, ValueError):
                    out.append(None)
            return out


def encode_overlapped(
    encode: Callable[[Any], Any], batches: Iterable[Prepared], on_batch: Callable[[int], None] | None = None
) -> list[np.ndarray]:
    """Run ``encode`` over prepared batches; copy each result back while the next one runs.

    The device-to-host copy of batch *i* is queued right after its encode and only waited
    for after batch *i + 1* has been queued, so the GPU never idles on the copy.

    Args:
        encode: Pixels on the device -> features on the device.
        batches: Prepared batches (typically from a prefetching thread).
        on_batch: Called with each finished batch's size (progress bars).

    Returns:
        One float32 vector per image, in order.
    """
    out: list[np.ndarray] = []
    pending: tuple[Any, Any] | None = None

    def finish(item: tuple[Any, Any]) -> None:
        features, event = item
        if event is not None:
            event.synchronize()
        arr = features.numpy() if features.device.type == "cpu" else features.cpu().numpy()
        out.extend(np.asarray(arr, dtype=np.float32))
        if on_batch is not None:
            on_batch(len(arr))

    for batch in batches:
        features = encode(batch.take()).float()
        event = None
        if features.device.type == "cuda":
            import torch

            features = features.to("cpu", non_blocking=True)
            event = torch.cuda.Event()
            event.record()
        if pending is not None:
            finish(pending)
        pending = (features, event)
    if pending is not None:
        finish(pending)
    return out
