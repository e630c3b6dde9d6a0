"""Runs ``retrieval index ...`` with a pause point, so a test can SIGKILL it at an exact moment.

    SYNC_PAUSE_AT=write:2 python tests/sync_driver.py index SRC --path DB ...

``write:N`` stops before the N-th chunk write (its vectors already embedded), ``prune:N``
before the N-th prune delete (``SYNC_PRUNE_CHUNK`` sets how many ids each deletes). At the
pause it prints ``PAUSED <point>`` on stdout and sleeps until it is killed.
"""

from __future__ import annotations

import os
import sys
import time

from retrieval.cli import main
from retrieval.jobs import sync


def _pausing(name: str, real, at: int):  # noqa: ANN001, ANN202 - wraps a module function
    calls = 0

    def wrapper(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        nonlocal calls
        calls += 1
        if calls == at:
            print(f"PAUSED {name}:{at}", flush=True)
            while True:
                time.sleep(1)
        return real(*args, **kwargs)

    return wrapper


if __name__ == "__main__":
    point = os.environ.get("SYNC_PAUSE_AT", "")
    if "SYNC_PRUNE_CHUNK" in os.environ:
        sync.PRUNE_CHUNK = int(os.environ["SYNC_PRUNE_CHUNK"])
    if point:
        name, _, n = point.partition(":")
        attr = {"write": "write_chunk", "prune": "prune_chunk"}[name]
        setattr(sync, attr, _pausing(name, getattr(sync, attr), int(n)))
    sys.exit(main(sys.argv[1:]))
