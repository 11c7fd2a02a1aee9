"""The spawn benchmark's rows that split ``run_process``'s distance to the floor.

procio's own spawn with blocking waits (no event loop) shows how much of that distance
is the spawn; the bare async spawn (the floor's spawn, its exit awaited once on the
event loop) shows what the loop's wait alone adds. Run thousands of times a round, each
must leave nothing behind: a pipe or pidfd left open would pile up until the
descriptors run out, a child left unreaped would stay a zombie, and either would slow
the rows measured after it. That the bare row really waits on the loop is tested with
the other bare rows (``test_benchmark_bare_async``).
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procio_process.pytest_plugin import LeakChecker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_process: Any = importlib.import_module("bench_process")

ROWS = [
    pytest.param(
        "procio's spawn, no event loop: blocking reads + wait",
        bench_process.spawn_procio_blocking,
        marks=pytest.mark.skipif(
            not bench_process._spawn.AVAILABLE, reason="procio spawns through Popen here"
        ),
        id="no event loop",
    ),
    pytest.param(
        bench_process.BARE_ASYNC_SPAWN,
        lambda count: bench_process.run_async(bench_process.spawn_bare_async, count),
        marks=pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here"),
        id="bare async",
    ),
]


@pytest.mark.parametrize(("name", "run"), ROWS)
def test_the_row_leaves_no_pipe_and_no_child(
    name: str, run: Callable[[int], tuple[float, float]], procio_leak_check: LeakChecker
) -> None:
    wall, cpu = run(20)
    # Raises if a pipe or pidfd is left open, or a child is left running or unreaped.
    procio_leak_check.check()
    assert wall > 0
    assert cpu >= 0


@pytest.mark.parametrize(("name", "run"), ROWS)
def test_the_row_is_measured_beside_run_process(
    name: str, run: Callable[[int], tuple[float, float]]
) -> None:
    rows = bench_process.spawn_rows(1, 1)
    names = {row.name for row in rows if row.figure.startswith("spawn-wall")}
    assert name in names
    assert "procio run_process (asyncio)" in names
