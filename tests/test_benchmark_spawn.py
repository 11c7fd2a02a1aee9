"""The spawn benchmark's row without an event loop: procio's own spawn, blocking waits.

It stands beside ``run_process`` to show how much of procio's distance to the floor is
the spawn and how much the event loop. Run thousands of times a round, it must leave
nothing behind: a pipe left open would pile up until the descriptors run out, a child
left unreaped would stay a zombie, and either would slow the rows measured after it.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest
from procio_process.pytest_plugin import LeakChecker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_process: Any = importlib.import_module("bench_process")

pytestmark = pytest.mark.skipif(
    not bench_process._spawn.AVAILABLE, reason="procio spawns through Popen here"
)


def test_the_row_without_an_event_loop_leaves_no_pipe_and_no_child(
    procio_leak_check: LeakChecker,
) -> None:
    wall, cpu = bench_process.spawn_procio_blocking(20)
    # Raises if a pipe is left open, or a child is left running or unreaped.
    procio_leak_check.check()
    assert wall > 0
    assert cpu >= 0


def test_the_row_without_an_event_loop_is_measured_beside_run_process() -> None:
    rows = bench_process.spawn_rows(1, 1)
    names = {row.name for row in rows if row.figure.startswith("spawn-wall")}
    assert "procio's spawn, no event loop: blocking reads + wait" in names
    assert "procio run_process (asyncio)" in names
