"""The command line: index the bundled gallery by URI, search it by text and by image, list collections."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from embedders.assets import gallery_dir
from retrieval.cli import _shown, main


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


# ---------------------------------------------------------------- errors: one line, the fix, nothing written


@pytest.fixture(scope="module")
def gallery_db(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("cli") / "db")
    assert main(["index", str(gallery_dir()), "--path", path, "--collection", "gallery", "--quiet", "--device", "cpu"]) == 0
    return path


def _error(capsys) -> str:
    """The one line a failed command printed on stderr (and nothing on stdout)."""
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert out == ""
    return lines[0]


def test_query_of_an_unknown_collection_names_the_command_that_creates_it(gallery_db, capsys):
    assert main(["query", "a red circle", "--path", gallery_db, "--collection", "nosuch"]) == 2
    line = _error(capsys)
    assert "'nosuch'" in line and "'gallery'" in line
    assert f"retrieval index SOURCE --path {gallery_db} --collection nosuch" in line


@pytest.mark.parametrize("argv", [["query", "a red circle"], ["list"], ["doctor"]])
def test_read_commands_on_a_typo_path_create_nothing(tmp_path, capsys, argv):
    typo = tmp_path / "typo"
    assert main([*argv, "--path", str(typo)]) == 2
    line = _error(capsys)
    assert repr(str(typo)) in line and f"retrieval index SOURCE --path {typo}" in line
    assert not typo.exists()


def test_query_image_missing_or_corrupt_is_one_line(gallery_db, tmp_path, capsys):
    missing = tmp_path / "missing.png"
    assert main(["query", "--image", str(missing), "--path", gallery_db, "--collection", "gallery"]) == 2
    assert repr(str(missing)) in _error(capsys)
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"not an image at all")
    assert main(["query", "--image", str(corrupt), "--path", gallery_db, "--collection", "gallery"]) == 2
    line = _error(capsys)
    assert repr(str(corrupt)) in line and "BytesIO" not in line


@pytest.mark.parametrize("argv, needle", [
    (["query", "a red circle", "-n", "0"], "-n must be a positive integer"),
    (["query", "a red circle", "--image", "x.png"], "not both"),
    (["query"], "give a text query or --image PATH"),
    (["query", "a red circle", "-n", "many"], "invalid int value: 'many'"),
    (["doctor", "--sample", "0"], "--sample must be a positive integer"),
    (["run", "--port", "70000"], "--port must be 1-65535; got 70000"),
])
def test_bad_arguments_are_usage_errors(gallery_db, capsys, argv, needle):
    assert main([*argv, "--path", gallery_db]) == 2
    assert needle in _error(capsys)


@pytest.mark.parametrize("option, needle", [
    (["--collection", "ab"], "'ab'"),
    (["--model", "no-such-model"], "'no-such-model'"),
    (["--from-parquet", "EMPTY"], "no .parquet shards"),
])
def test_index_refuses_a_bad_name_or_model_before_creating_the_database(tmp_path, capsys, option, needle):
    path = tmp_path / "db"
    option = [str(tmp_path) if o == "EMPTY" else o for o in option]  # a folder without shards
    source = [] if "--from-parquet" in option else [str(gallery_dir())]
    assert main(["index", *source, "--path", str(path), "--quiet", "--device", "cpu", *option]) == 2
    assert needle in _error(capsys)
    assert not path.exists()


def test_list_while_another_process_holds_the_path(gallery_db, capsys):
    # What `retrieval run` does to its path: another process opens it and keeps it.
    hold = f"import sys, retrieval; c = retrieval.PersistentClient(path={gallery_db!r}); print('held', flush=True); sys.stdin.read()"
    holder = subprocess.Popen([sys.executable, "-c", hold], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert main(["list", "--path", gallery_db]) == 1
        line = _error(capsys)
        assert repr(gallery_db) in line and "retrieval run" in line
    finally:
        holder.stdin.close()  # it closes its client and exits
        holder.wait(timeout=60)


@pytest.mark.parametrize("command", [["run"], ["list"], ["index", str(gallery_dir())]])
def test_a_path_that_is_a_file_is_refused(tmp_path, capsys, command):
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main([*command, "--path", str(afile)]) == 2
    assert f"--path {str(afile)!r} is a file" in _error(capsys)
    assert afile.read_text() == "mine"


def test_run_with_a_missing_config_or_a_taken_port_writes_nothing(tmp_path, capsys):
    path = tmp_path / "served"
    assert main(["run", "--path", str(path), "--config", str(tmp_path / "nothere.yaml")]) == 2
    assert "nothere.yaml" in _error(capsys)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["run", "--path", str(path), "--port", str(port)]) == 2
    line = _error(capsys)
    assert f"127.0.0.1:{port}" in line and "--port" in line
    assert not path.exists()


def test_debug_shows_the_traceback(gallery_db, capsys, monkeypatch):
    argv = ["query", "a red circle", "--path", gallery_db, "--collection", "nosuch"]
    assert main([*argv, "--debug"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and err.strip().splitlines()[-1].startswith("error: ")
    assert main(["--debug", *argv]) == 2
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("RETRIEVAL_DEBUG", "1")
    assert main(argv) == 2
    assert "Traceback" in capsys.readouterr().err


def test_an_unexpected_failure_is_one_line_with_exit_1(gallery_db, capsys, monkeypatch):
    import retrieval.cli as cli

    def broken(args):
        raise KeyError("boom")

    monkeypatch.setattr(cli, "cmd_list", broken)
    assert main(["list", "--path", gallery_db]) == 1
    line = _error(capsys)
    assert "KeyError" in line and "--debug" in line


def test_the_real_command_prints_one_line_and_exit_2(tmp_path):
    """The installed entry point, in a fresh process: no traceback, nothing created."""
    typo = tmp_path / "typo"
    run = subprocess.run([sys.executable, "-m", "retrieval.cli", "list", "--path", str(typo)],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "RETRIEVAL_DEBUG": ""})
    assert run.returncode == 2 and run.stdout == ""
    assert len(run.stderr.strip().splitlines()) == 1 and run.stderr.startswith("error: ")
    assert not typo.exists()


# ---------------------------------------------------------------------------------- output that reads well


def test_distances_never_print_negative_zero():
    assert _shown(-1e-7) == _shown(-0.0) == _shown(0.0) == "0.0000"
    assert _shown(0.12345) == "0.1235" and _shown(-0.5) == "-0.5000"  # inner product may be truly negative


def test_a_self_match_prints_zero_and_a_tiny_job_reads_well(tmp_path, capsys):
    one = tmp_path / "one"
    one.mkdir()
    shutil.copy(Path(gallery_dir()) / "red_circle.png", one / "red_circle.png")
    path = str(tmp_path / "db")
    assert main(["index", str(one), "--path", path, "--collection", "single", "--quiet", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("indexed 1 image into collection 'single'") and "images/s" not in out
    assert re.search(r"; in \d+(\.\d+)? s$", out.strip()), out
    assert main(["query", "--image", str(one / "red_circle.png"), "--path", path, "--collection", "single"]) == 0
    assert capsys.readouterr().out.split() == ["1", "0.0000", "red_circle.png"]
    assert main(["list", "--path", path]) == 0
    assert capsys.readouterr().out.startswith("single\t1 record\t")
