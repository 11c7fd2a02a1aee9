"""The round trip's bare async ping-pong: what an awaited call costs at the least.

The row stands beside procio's round trip to show how much of procio's distance to the
busy-polling floor is the event loop's and how much procio's own. It must make real
calls (each answer checked), pass through the event loop once per call, and leave no
child and no event loop thread behind.
"""

from __future__ import annotations

import importlib
import sys
import threading
from pathlib import Path
from typing import Any

import anyio.lowlevel
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_workers: Any = importlib.import_module("bench_workers")


def test_the_bare_async_ping_pong_checks_every_answer_and_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    threads = set(threading.enumerate())
    passes: list[int] = []
    checkpoint = anyio.lowlevel.checkpoint

    async def counted() -> None:
        passes.append(1)
        await checkpoint()

    monkeypatch.setattr(bench_workers.anyio.lowlevel, "checkpoint", counted)
    contender = bench_workers.AsyncPingPong()
    contender.start()
    try:
        assert contender.role == "other"  # a reference beside the floors, not one
        assert contender._child.pid in contender.clock.pids  # its child's CPU is a worker's
        contender.calls(50)
        assert len(passes) == 50
    finally:
        contender.close()
    assert contender._child.returncode == 0
    assert set(threading.enumerate()) == threads


def test_a_wrong_answer_fails_the_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    contender = bench_workers.AsyncPingPong()
    contender.start()
    try:
        # As if the child answered something else than its argument.
        monkeypatch.setattr(bench_workers.pickle, "loads", lambda data: "wrong")
        with pytest.raises(AssertionError, match="answered"):
            contender.calls(1)
    finally:
        monkeypatch.undo()
        contender.close()
