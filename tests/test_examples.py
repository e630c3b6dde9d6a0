"""The examples run and clean up after themselves: their throwaway stores leave nothing in the temp dir."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("example", [
    "index_photo_folder.py",
    # ~25 s on 2 cores (it reopens in a second process); the same TemporaryDirectory pattern.
    pytest.param("reopen_saved_collection.py", marks=pytest.mark.slow),
])
def test_example_runs_and_leaves_no_temporary_folders(tmp_path, example):
    temp = tmp_path / "tmp"
    temp.mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "TMPDIR": str(temp),
           "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}  # torch's own cache is not the example's
    run = subprocess.run([sys.executable, str(REPO / "examples" / example)], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.strip()
    assert list(temp.iterdir()) == [], "the example left folders in the temp dir"
