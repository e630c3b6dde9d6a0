"""The command line: index the bundled gallery by URI, search it by text and by image, list collections."""

from __future__ import annotations

from pathlib import Path

from embedders.assets import gallery_dir
from retrieval.cli import main


def test_index_query_and_list(tmp_path, capsys):
    path = str(tmp_path / "db")
    assert main(["index", str(gallery_dir()), "--path", path, "--collection", "gallery", "--quiet", "--device", "cpu"]) == 0
    assert "indexed 40 images" in capsys.readouterr().out
    assert main(["query", "a red circle", "--path", path, "--collection", "gallery", "-n", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 3 and lines[0].split()[-1] == "red_circle.png"
    probe = str(Path(gallery_dir()) / "blue_star.png")
    assert main(["query", "--image", probe, "--path", path, "--collection", "gallery", "-n", "1"]) == 0
    assert capsys.readouterr().out.split()[-1] == "blue_star.png"
    # Re-indexing is idempotent: ids are the relative paths.
    assert main(["index", str(gallery_dir()), "--path", path, "--collection", "gallery", "--quiet"]) == 0
    assert "(40 total)" in capsys.readouterr().out
    assert main(["list", "--path", path]) == 0
    assert capsys.readouterr().out.startswith("gallery\t40 records\tembedding function: open_clip")


def test_bad_folder_and_missing_query_are_clear_errors(tmp_path, capsys):
    assert main(["index", str(tmp_path / "nope"), "--path", str(tmp_path / "db")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["query", "--path", str(tmp_path / "db")]) == 2
    assert "give a text query" in capsys.readouterr().err
