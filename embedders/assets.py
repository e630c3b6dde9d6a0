"""Where the bundled model weights and demo gallery live.

The repository's top-level ``assets/`` folder installs as the data package
``retrieval_assets`` (see ``pyproject.toml``). From a source checkout that package may not
be importable, so the checkout's ``assets/`` folder is the fallback.
"""

from __future__ import annotations

import importlib.resources
from pathlib import Path

__all__ = ["bundled_models", "gallery_dir", "models_dir"]

_CHECKOUT_ASSETS = Path(__file__).resolve().parents[1] / "assets"


def _assets_subdir(name: str) -> Path:
    try:
        root = importlib.resources.files("retrieval_assets")
        candidate = Path(str(root)) / name
        if candidate.is_dir():
            return candidate
    except (ModuleNotFoundError, TypeError):
        pass  # not installed as a package (source checkout): use the checkout's folder
    return _CHECKOUT_ASSETS / name


def models_dir() -> Path:
    """The folder holding bundled open_clip models, one sub-folder per model.

    Example:
        >>> (models_dir() / "tiny-shapes" / "open_clip_config.json").is_file()
        True
    """
    return _assets_subdir("models")


def gallery_dir() -> Path:
    """The folder of demo PNGs (coloured shapes named like ``red_circle.png``).

    Example:
        >>> any(gallery_dir().glob("*.png"))
        True
    """
    return _assets_subdir("gallery")


def bundled_models() -> list[str]:
    """Names of the bundled models (folders holding an ``open_clip_config.json``).

    Example:
        >>> "tiny-shapes" in bundled_models()
        True
    """
    root = models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "open_clip_config.json").is_file())
