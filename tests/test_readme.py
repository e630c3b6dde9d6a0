"""The README's Python examples run as written, in order, on a fresh clone (as the docstring examples do).

Every ```python block of README.md (those indented under a list item too) runs in one interpreter, one
after another and sharing their names, as a reader pasting them into one session would. The working
directory is a stand-in for a fresh clone: a temporary folder holding a symlink to each top-level entry of
the repository, so ``assets/gallery/...`` resolves and ``./.chroma`` and ``./data`` land in the temporary
folder, never in the checkout. Two first lines change what happens to a block:

- ``# not run: <reason>``: skipped (fragments, a GPU, a cluster);
- ``# needs the server above: ...``: runs against a real ``retrieval run`` serving ``./data`` with the
  gallery indexed, as the README's commands before it make it; the one liberty taken is the port: the
  README's 8000 becomes a free one, so the test cannot meet another server.

A top-level expression followed by a comment that is a Python literal (``...["ids"]   # [['r']]``) must
evaluate to that literal, so the outputs the README shows stay true.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.http_server import RunningServer

REPO = Path(__file__).resolve().parent.parent
SKIP = "# not run:"
NEEDS_SERVER = "# needs the server above"
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\S*)[ \t]*$")


@dataclass
class Block:
    line: int  # README line of the block's first code line (1-based)
    code: str

    @property
    def first_line(self) -> str:
        return self.code.lstrip().split("\n", 1)[0]


def python_blocks(markdown: str) -> list[Block]:
    """The ```python blocks of a Markdown text, dedented by their fence's indentation."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        i += 1
        if not opening:
            continue
        start, body = i, []
        while i < len(lines) and not re.match(rf"^{re.escape(opening['indent'])}```\s*$", lines[i]):
            body.append(lines[i])
            i += 1
        i += 1  # the closing fence
        if opening["lang"] == "python":
            blocks.append(Block(start + 1, textwrap.dedent("\n".join(body)) + "\n"))
    return blocks


# Runs in the child: each block compiled as README.md with its own line numbers, so a failure's
# traceback points at the README line. A top-level expression whose comment is a Python literal
# (``col.query(...)["ids"]   # [['r']]``) must evaluate to that literal: the README's outputs stay true.
RUNNER = """
import ast, io, json, sys, tokenize

def literal_comments(source):
    found = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            try:
                found[tok.start[0]] = ast.literal_eval(tok.string[1:].strip())
            except (ValueError, SyntaxError):
                pass
    return found

namespace = {"__name__": "__main__"}
for line, code in json.load(open(sys.argv[1])):
    source = "\\n" * (line - 1) + code
    expected = literal_comments(source)
    for node in ast.parse(source, "README.md").body:
        if isinstance(node, ast.Expr) and node.end_lineno in expected:
            got = eval(compile(ast.Expression(node.value), "README.md", "eval"), namespace)
            want = expected[node.end_lineno]
            assert got == want, f"README.md:{node.end_lineno} says {want!r}; got {got!r}"
        else:
            exec(compile(ast.Module([node], []), "README.md", "exec"), namespace)
    print(f"README.md:{line} ran", flush=True)
"""


def test_python_blocks_are_found_dedented_and_marked():
    text = "intro\n```python\nx = 1\n```\n- item\n  ```python\n  # not run: a fragment\n  y = x\n  ```\n```bash\nls\n```\n"
    blocks = python_blocks(text)
    assert [(b.line, b.code) for b in blocks] == [(3, "x = 1\n"), (7, "# not run: a fragment\ny = x\n")]
    assert blocks[1].first_line.startswith(SKIP)


def _fresh_clone(folder: Path) -> Path:
    folder.mkdir()
    for entry in REPO.iterdir():
        if entry.name not in {".git", ".chroma", "data"} and not entry.name.startswith(".pytest"):
            (folder / entry.name).symlink_to(entry)
    return folder


def test_readme_python_blocks_run_as_written(tmp_path):
    blocks = python_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    runnable = [b for b in blocks if not b.first_line.startswith(SKIP)]
    assert runnable, "the README has no runnable Python example"
    clone = _fresh_clone(tmp_path / "clone")
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1"}

    server = None
    try:
        if any(b.first_line.startswith(NEEDS_SERVER) for b in runnable):
            # The README's commands before the server snippet: index the gallery into ./data, serve it.
            subprocess.run(
                [sys.executable, "-m", "retrieval.cli", "index", "assets/gallery", "--path", "./data",
                 "--collection", "gallery", "--quiet", "--device", "cpu"],
                cwd=clone, env=env, check=True, capture_output=True, timeout=300,
            )
            server = RunningServer(clone / "data")
        program = [
            (b.line, b.code.replace("8000", str(server.port)) if b.first_line.startswith(NEEDS_SERVER) else b.code)
            for b in runnable
        ]
        (tmp_path / "blocks.json").write_text(json.dumps(program))
        run = subprocess.run(
            [sys.executable, "-c", RUNNER, str(tmp_path / "blocks.json")],
            cwd=clone, env=env, capture_output=True, text=True, timeout=300,
        )
    finally:
        if server is not None:
            assert server.stop() == 0
    assert run.returncode == 0, f"a README example failed:\n{run.stdout}\n{run.stderr[-4000:]}"
    assert run.stdout.count(" ran") == len(runnable), run.stdout
    # Nothing was written into the checkout itself: the examples' stores are in the stand-in clone.
    assert (clone / ".chroma").is_dir() and not any(p.is_symlink() for p in (clone / ".chroma", clone / "data"))
