"""The background graph thread (retrieval.store.graph_builder): it runs owed work, and runs it at a
lower priority than the threads answering requests (so are the threads hnswlib starts from it)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from retrieval.store.graph_builder import BACKGROUND_NICENESS, GraphBuilder


class _Work:
    def __init__(self, steps: int):
        self.graph_lock, self.cancelled = threading.Lock(), False
        self.steps, self.niceness, self.child_niceness = steps, [], None

    def background_step(self, should_stop) -> bool:
        me = threading.get_native_id()
        self.niceness.append(os.getpriority(os.PRIO_PROCESS, me))
        if self.child_niceness is None:  # a thread started from here, as hnswlib's are
            seen = []
            child = threading.Thread(target=lambda: seen.append(os.getpriority(os.PRIO_PROCESS, threading.get_native_id())))
            child.start()
            child.join()
            self.child_niceness = seen[0]
        self.steps -= 1
        return self.steps > 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice values are Linux's")
def test_owed_work_runs_to_its_end_in_a_nicer_thread_than_the_callers():
    builder, work = GraphBuilder(name="test-graph"), _Work(steps=3)
    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    builder.wake(work)
    assert builder.idle(timeout=10)
    expected = min(19, mine + BACKGROUND_NICENESS)
    assert work.steps == 0 and work.niceness == [expected] * 3 and work.child_niceness == expected
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine  # the caller is left as it was
