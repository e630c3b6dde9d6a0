"""``OpenCLIPEmbeddingFunction``: texts and images in one space, through open_clip.

Constructing the function and reading its config import neither torch nor open_clip and
load no weights; the model loads on the first call. ``model_name`` may be:

* a bundled model (``"tiny-shapes"``, any folder under ``embedders.assets.models_dir()``),
* ``"local-dir:/path"`` or a plain path to a folder in open_clip's local-dir layout
  (``open_clip_config.json`` + weights),
* ``"hf-hub:org/repo"``,
* an open_clip architecture (``"ViT-B-32"``) with ``checkpoint`` = a tag
  (``"laion2b_s34b_b79k"``) or a local checkpoint file.

The persisted config uses chromadb's key names (``model_name``, ``checkpoint``), so chromadb and
retrieval read each other's ``open_clip`` configs. ``pretrained`` (open_clip's name, and the key
older retrieval databases stored) is accepted as an alias of ``checkpoint``. chromadb also stores
``device``; it is read and ignored, because the device is a choice of the host that opens the
collection, and it is never written.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from embedders.assets import bundled_models, models_dir
from embedders.base import BaseEmbeddingFunction, check_embeddings
from embedders.errors import ConfigError, ModelUnavailableError
from embedders.pipeline import batched, prefetch_map

__all__ = ["OpenCLIPEmbeddingFunction"]

_LOCAL_DIR = "local-dir:"
_HF_HUB = "hf-hub:"
_INSTALL_HINT = "pip install open-clip-torch torch==2.14.1 torchvision==0.29.1"


def _offline() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TRANSFORMERS_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


class OpenCLIPEmbeddingFunction(BaseEmbeddingFunction):
    """CLIP embeddings of texts and images (one shared space), batched and lazily loaded.

    Args:
        model_name: What to load (see the module docstring); persisted.
        checkpoint: Weights tag or checkpoint path for an open_clip architecture name (chromadb's
            name); persisted.
        device: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda:1"`` ...; a host
            option, never persisted.
        batch_size: Inputs per forward pass; a host option. ``None`` (default): 256 on a GPU, where
            small batches leave it idle, and 64 on the CPU.
        normalize: Return unit-length vectors; persisted only when False (chromadb always
            normalises, so its readers need no key for the default).
        cache_dir: Where downloaded weights are cached (default: Hugging Face's cache); a host
            option.
        pretrained: open_clip's name for ``checkpoint``; pass one or the other.

    Example:
        >>> ef = OpenCLIPEmbeddingFunction("tiny-shapes", device="cpu")
        >>> ef.get_config()
        {'model_name': 'tiny-shapes'}
        >>> OpenCLIPEmbeddingFunction("ViT-B-32", pretrained="laion2b_s34b_b79k").get_config()
        {'model_name': 'ViT-B-32', 'checkpoint': 'laion2b_s34b_b79k'}
        >>> text, image = ef(["a red circle", np.zeros((64, 64, 3), np.uint8)])
        >>> text.shape == image.shape == (64,)
        True
    """

    CONFIG_KEYS = ("model_name", "checkpoint", "normalize")
    CONFIG_ALIASES = {"pretrained": "checkpoint"}
    IGNORED_CONFIG_KEYS = ("device",)
    RUNTIME_OPTIONS = ("device", "batch_size", "cache_dir")
    MODALITIES = frozenset({"text", "image"})

    def __init__(
        self,
        model_name: str = "tiny-shapes",
        checkpoint: str | None = None,
        device: str = "auto",
        batch_size: int | None = None,
        normalize: bool = True,
        cache_dir: str | None = None,
        *,
        pretrained: str | None = None,
    ) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise ConfigError(f"model_name must be a non-empty string; got {model_name!r}")
        if pretrained is not None:
            if checkpoint is not None and checkpoint != pretrained:
                raise ConfigError(
                    f"checkpoint={checkpoint!r} and pretrained={pretrained!r} name the same setting; "
                    "pass only one of them"
                )
            checkpoint = pretrained
        if checkpoint is not None and not isinstance(checkpoint, str):
            raise ConfigError(f"checkpoint must be a tag, a checkpoint path or None; got {checkpoint!r}")
        if not isinstance(normalize, bool):
            raise ConfigError(f"normalize must be True or False; got {normalize!r}")
        self.model_name = model_name
        self.checkpoint = checkpoint
        self.normalize = normalize
        self.device = device
        self.batch_size = batch_size
        self.cache_dir = cache_dir
        self._check_runtime()
        self._lock = threading.Lock()
        self._model: Any = None
        self._preprocess: Any = None
        self._batcher: Any = None  # ImageBatcher: this model's fast preprocessing, per device
        self._tokenizer: Any = None
        self._device: Any = None

    @property
    def pretrained(self) -> str | None:
        """open_clip's name for :attr:`checkpoint`."""
        return self.checkpoint

    @staticmethod
    def name() -> str:
        return "open_clip"

    def get_config(self) -> dict[str, Any]:
        """chromadb's keys; ``checkpoint`` only when set, ``normalize`` only when False."""
        config: dict[str, Any] = {"model_name": self.model_name}
        if self.checkpoint is not None:
            config["checkpoint"] = self.checkpoint
        if not self.normalize:
            config["normalize"] = False
        return config

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> OpenCLIPEmbeddingFunction:
        """Rebuild from :meth:`get_config` output; loads no weights.

        Example:
            >>> OpenCLIPEmbeddingFunction.build_from_config({"model_name": "tiny-shapes"}).model_name
            'tiny-shapes'
            >>> stored_by_chromadb = {"model_name": "ViT-B-32", "checkpoint": "laion2b_s34b_b79k", "device": "cpu"}
            >>> OpenCLIPEmbeddingFunction.build_from_config(stored_by_chromadb).get_config()
            {'model_name': 'ViT-B-32', 'checkpoint': 'laion2b_s34b_b79k'}
        """
        return OpenCLIPEmbeddingFunction._from_config(config)

    # ------------------------------------------------------------------ embedding
    def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        import torch

        self._ensure_loaded()
        out: list[np.ndarray] = []
        for batch in batched(texts, self._batch_size()):
            tokens = self._tokenizer(list(batch)).to(self._device)
            with torch.inference_mode(), self._autocast():
                features = self._model.encode_text(tokens, normalize=self.normalize)
            out.extend(features.float().cpu().numpy())
        return out

    def _embed_images(self, images: list[np.ndarray]) -> list[np.ndarray]:
        self._ensure_loaded()
        batcher = self._image_batcher()
        return self._encode_batches(prefetch_map(batcher.from_arrays, batched(images, self._batch_size()), depth=2))

    def embed_image_uris(
        self,
        uris: Sequence[str],
        loader: Callable[[Sequence[str]], Sequence[Any]],
        *,
        progress: bool | Callable[[int], Any] = False,
        batch_size: int | None = None,
    ) -> list[np.ndarray]:
        """Load, preprocess and embed images by URI, overlapping loading with encoding.

        While batch *i* runs through the image tower, a background thread reads, decodes
        (with the loader's own thread pool) and preprocesses batch *i + 1*.

        Args:
            uris: Image URIs the loader understands.
            loader: A data loader, e.g. ``loaders.ImageLoader()``.
            progress: Show a tqdm progress bar, or a callable given each finished batch's size.
            batch_size: Overrides this function's ``batch_size`` for this call.

        Returns:
            One vector per URI, in order.

        Raises:
            embedders.errors.LoadError: A URI could not be loaded (the message names it).

        Example:
            >>> from embedders.assets import gallery_dir
            >>> from loaders import ImageLoader
            >>> uris = sorted(str(p) for p in gallery_dir().glob("*.png"))[:3]
            >>> len(OpenCLIPEmbeddingFunction(device="cpu").embed_image_uris(uris, ImageLoader()))
            3
        """
        from tqdm.auto import tqdm

        self._ensure_loaded()
        size = batch_size or self._batch_size()
        uris = list(uris)
        batcher = self._image_batcher()

        def prepare(batch: Sequence[str]) -> Any:
            return batcher.from_uris(batch, loader)

        batches = prefetch_map(prepare, batched(uris, size), depth=2)
        if callable(progress):
            vectors = self._encode_batches(batches, progress)
        else:
            with tqdm(total=len(uris), disable=not progress, unit="img", desc="embedding images") as bar:
                vectors = self._encode_batches(batches, bar.update)
        return check_embeddings(vectors, len(uris), self.name())

    def image_geometry(self) -> Any:
        """The image tower's input geometry (size, resize, crop, mean/std); loads the model.

        A batch job that decodes images in other processes (``retrieval embed --ray``) fits
        them to this geometry there, then hands the model arrays it only has to normalise.

        Example:
            >>> OpenCLIPEmbeddingFunction("tiny-shapes", device="cpu").image_geometry().size
            (64, 64)
        """
        self._ensure_loaded()
        return self._image_batcher().geometry

    def _image_batcher(self) -> Any:
        """The fast preprocessing for this model and device (see ``embedders.image_batches``).

        It reproduces open_clip's own ``preprocess`` geometry (resize mode, crop, mean/std)
        from the model's ``preprocess_cfg``, as batched work on every core or on the GPU.
        """
        if self._batcher is None or self._batcher.device != self._device:
            import open_clip
            import torch

            from embedders.image_batches import ImageBatcher
            from embedders.preprocess import Geometry

            geometry = Geometry.from_config(open_clip.get_model_preprocess_cfg(self._model))
            dtype = torch.float16 if self._device.type == "cuda" else None
            self._batcher = ImageBatcher(geometry, self._device, dtype)
        return self._batcher

    def _encode_batches(self, batches: Iterable[Any], on_batch: Callable[[int], Any] | None = None) -> list[np.ndarray]:
        import torch

        from embedders.image_batches import encode_overlapped

        def encode(pixels: Any) -> Any:
            with torch.inference_mode(), self._autocast():
                return self._model.encode_image(pixels, normalize=self.normalize)

        return encode_overlapped(encode, batches, on_batch)

    def _autocast(self) -> Any:
        import contextlib

        import torch

        if self._device is not None and self._device.type == "cuda":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    # ------------------------------------------------------------------ loading
    def _ensure_loaded(self) -> None:
        if self._model is not None:
            return
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        name, pretrained = self._resolve()
        try:
            import open_clip
            import torch
        except ImportError as exc:
            raise ImportError(
                f"the 'open_clip' embedding function needs open_clip and torch: {_INSTALL_HINT}"
            ) from exc
        if name.startswith(_LOCAL_DIR) or name.startswith(_HF_HUB):
            if pretrained is not None:
                # open_clip would silently ignore it; a persisted config must not carry dead options.
                raise ConfigError(
                    f"checkpoint={pretrained!r} cannot be combined with model_name={self.model_name!r}, "
                    "which already names its weights; drop checkpoint (pretrained)"
                )
        else:
            self._check_architecture(open_clip, name, pretrained)
        device = _pick_device(torch, self.device)
        try:
            model, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=pretrained, device=device, require_pretrained=True, cache_dir=self.cache_dir
            )
            tokenizer = open_clip.get_tokenizer(name, cache_dir=self.cache_dir)
        except (ConfigError, ModelUnavailableError):
            raise
        except Exception as exc:  # noqa: BLE001 - open_clip raises bare RuntimeError/OSError
            if name.startswith(_LOCAL_DIR):
                raise ModelUnavailableError(
                    f"cannot load open_clip model {self.model_name!r} from {name[len(_LOCAL_DIR):]!r}: "
                    f"{type(exc).__name__}: {exc} (is the folder complete: open_clip_config.json with "
                    "model_cfg, and a matching .safetensors checkpoint?)"
                ) from exc
            raise self._unavailable(f"loading failed: {type(exc).__name__}: {exc}") from exc
        model.eval()
        self._model, self._preprocess, self._tokenizer, self._device = model, preprocess, tokenizer, device

    def _resolve(self) -> tuple[str, str | None]:
        """Map ``model_name`` to what open_clip accepts, checking local paths up front."""
        name = self.model_name
        if name.startswith(_LOCAL_DIR):
            path = Path(name[len(_LOCAL_DIR):]).expanduser()
        elif name.startswith(_HF_HUB):
            return name, self.pretrained
        elif name in bundled_models():
            return f"{_LOCAL_DIR}{models_dir() / name}", self.pretrained
        elif os.sep in name or "/" in name or Path(name).expanduser().is_dir():
            path = Path(name).expanduser()
        else:
            return name, self.pretrained
        if not (path / "open_clip_config.json").is_file():  # checked here: open_clip's error is vague
            raise ModelUnavailableError(
                f"model_name={name!r}: {str(path)!r} is not a folder holding open_clip_config.json "
                f"and weights (bundled models: {bundled_models()}; a Hugging Face repo is written "
                "'hf-hub:org/repo'; an open_clip architecture such as 'ViT-B-32' needs "
                "checkpoint=<tag or checkpoint path>)"
            )
        return f"{_LOCAL_DIR}{path}", self.pretrained

    def _check_architecture(self, open_clip: Any, name: str, pretrained: str | None) -> None:
        """Fail fast, before open_clip builds a model or touches the network."""
        known = open_clip.list_models()
        if name.replace("/", "-") not in known:
            import difflib

            close = difflib.get_close_matches(name, known + bundled_models(), n=3)
            raise ConfigError(
                f"unknown open_clip model_name {name!r} (close: {close}); use a bundled model "
                f"{bundled_models()}, an open_clip architecture, 'local-dir:/path' or 'hf-hub:org/repo'"
            )
        if pretrained is None:
            raise ConfigError(
                f"model_name={name!r} is an architecture without weights; pass checkpoint=<tag> "
                f"(one of {open_clip.list_pretrained_tags_by_model(name)}) or a checkpoint path"
            )
        if os.path.isfile(pretrained):
            return
        cfg = open_clip.get_pretrained_cfg(name, pretrained)
        if not cfg:
            raise ConfigError(
                f"checkpoint={pretrained!r} is neither a tag of {name!r} nor an existing file; tags: "
                f"{open_clip.list_pretrained_tags_by_model(name)}"
            )
        if _offline() and not _weights_cached(cfg, self.cache_dir):
            raise self._unavailable("they are not in the local cache and HF_HUB_OFFLINE forbids downloading")

    def _unavailable(self, why: str) -> ModelUnavailableError:
        return ModelUnavailableError(
            f"the weights of open_clip model_name={self.model_name!r}, checkpoint={self.checkpoint!r} "
            f"are not reachable: {why}. To fix: download them on a connected machine (e.g. call this "
            "embedding function once there) and copy the Hugging Face cache (HF_HOME) here, or pass "
            "cache_dir=<folder holding them>, or point at local files: checkpoint='/path/to/"
            "checkpoint.safetensors' or model_name='local-dir:/path/to/folder'."
        )

    def _runtime_changed(self, keys: set[str]) -> None:
        self._check_runtime()
        if "device" in keys and self._model is not None:
            import torch

            self._device = _pick_device(torch, self.device)
            self._model.to(self._device)
        if "cache_dir" in keys:
            self._model = None  # weights may now come from elsewhere
            self._batcher = None

    def _batch_size(self) -> int:
        """The batch size in force: the one given, else 256 on a GPU and 64 on the CPU."""
        if self.batch_size is not None:
            return self.batch_size
        return 256 if self._device is not None and self._device.type == "cuda" else 64

    def _check_runtime(self) -> None:
        b = self.batch_size
        if b is not None and (isinstance(b, bool) or not isinstance(b, int) or b < 1):
            raise ConfigError(f"batch_size must be a positive integer; got {b!r}")
        if not isinstance(self.device, str):
            raise ConfigError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda:0'; got {self.device!r}"
            )


def _pick_device(torch: Any, device: str) -> Any:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'") from exc


def _weights_cached(cfg: dict[str, Any], cache_dir: str | None) -> bool:
    """Whether a pretrained tag's weights are already on disk (no network access)."""
    if cfg.get("file"):
        return os.path.isfile(cfg["file"])
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, filename = os.path.split(hub.rstrip("/")) if not hub.endswith("/") else (hub.rstrip("/"), "")
        candidates = [filename] if filename else []
        candidates += ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for fname in candidates:
            found = try_to_load_from_cache(repo_id=repo, filename=fname, cache_dir=cache_dir)
            if isinstance(found, str):
                return True
        return False
    url = cfg.get("url", "")
    if url:
        root = cache_dir or os.path.expanduser("~/.cache/clip")
        return os.path.isfile(os.path.join(root, os.path.basename(url)))
    return False
