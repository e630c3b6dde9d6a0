"""Repository-wide pytest hooks (tests/conftest.py holds the fixtures).

The default run collects every docstring example in ``retrieval``, ``embedders`` and ``loaders``
(``--doctest-modules`` in pyproject.toml) so they cannot rot. The few that build a real torch
model take seconds each on a CPU; they are marked ``slow`` and run with ``-m slow``.
"""

from __future__ import annotations

import pytest

# Measured on a 2-core host: open_clip 5.9 s, sentence_transformer 4.6 s, image_batches 4.0 s;
# every other example takes well under half a second.
TORCH_DOCTEST_MODULES = frozenset({
    "embedders/open_clip.py",
    "embedders/sentence_transformer.py",
    "embedders/image_batches.py",
    "embedders/train_tiny_clip.py",
})


@pytest.hookimpl(tryfirst=True)  # before ``-m 'not slow'`` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if type(item).__name__ == "DoctestItem" and item.nodeid.split("::")[0] in TORCH_DOCTEST_MODULES:
            item.add_marker(pytest.mark.slow)
