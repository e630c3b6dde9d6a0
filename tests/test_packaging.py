"""The bundled model and gallery reach a non-editable install."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_model_files_are_where_the_loader_looks():
    from embedders.assets import gallery_dir, models_dir

    model = models_dir() / "tiny-shapes"
    assert (model / "open_clip_config.json").is_file() and (model / "open_clip_model.safetensors").is_file()
    assert len(list(gallery_dir().glob("*.png"))) >= 20


@pytest.mark.slow
def test_wheel_carries_model_gallery_and_type_markers(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)], check=True, timeout=600
    )
    (wheel,) = tmp_path.glob("retrieval-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "retrieval_assets/models/tiny-shapes/open_clip_model.safetensors" in names
    assert "retrieval_assets/models/tiny-shapes/open_clip_config.json" in names
    assert sum(n.startswith("retrieval_assets/gallery/") for n in names) >= 20
    assert {"retrieval/py.typed", "embedders/py.typed", "loaders/py.typed"} <= names
