"""The spawn benchmark's rows beside ``run_process`` that split its distance to the floor.

procio's own spawn with blocking waits (no event loop) shows how much of that distance
is the spawn; the bare async spawn (the floor's spawn, its exit awaited once on the
event loop) shows what the loop's wait alone adds. Run thousands of times a round, each
must leave nothing behind: a pipe or pidfd left open would pile up until the
descriptors run out, a child left unreaped would stay a zombie, and either would slow
the rows measured after it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from procio_process.pytest_plugin import LeakChecker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_process: Any = importlib.import_module("bench_process")

needs_procio_spawn = pytest.mark.skipif(
    not bench_process._spawn.AVAILABLE, reason="procio spawns through Popen here"
)
needs_pidfd = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here")


@needs_procio_spawn
def test_the_row_without_an_event_loop_leaves_no_pipe_and_no_child(
    procio_leak_check: LeakChecker,
) -> None:
    wall, cpu = bench_process.spawn_procio_blocking(20)
    # Raises if a pipe is left open, or a child is left running or unreaped.
    procio_leak_check.check()
    assert wall > 0
    assert cpu >= 0


@needs_procio_spawn
def test_the_row_without_an_event_loop_is_measured_beside_run_process() -> None:
    rows = bench_process.spawn_rows(1, 1)
    names = {row.name for row in rows if row.figure.startswith("spawn-wall")}
    assert "procio's spawn, no event loop: blocking reads + wait" in names
    assert "procio run_process (asyncio)" in names


@needs_pidfd
def test_the_bare_async_row_reaps_every_child_and_closes_every_pidfd(
    procio_leak_check: LeakChecker,
) -> None:
    wall, cpu = bench_process.run_async(bench_process.spawn_bare_async, 20)
    # Raises if a pidfd is left open, or a child is left running or unreaped.
    procio_leak_check.check()
    assert wall > 0
    assert cpu >= 0


@needs_pidfd
def test_the_bare_async_row_waits_on_the_event_loop_once_per_spawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Its point is the one wait on the loop that the floor does not have: a row that
    # blocked in waitpid instead would measure the floor again under another name.
    waited: list[int] = []
    wait_readable = anyio.wait_readable

    async def counting(fd: int) -> None:
        waited.append(fd)
        await wait_readable(fd)

    monkeypatch.setattr(bench_process.anyio, "wait_readable", counting)
    bench_process.run_async(bench_process.spawn_bare_async, 5)
    assert len(waited) == 5 + 1  # and one spawn to warm up


@needs_pidfd
def test_the_bare_async_row_is_measured_beside_run_process() -> None:
    rows = bench_process.spawn_rows(1, 1)
    names = {row.name for row in rows if row.figure.startswith("spawn-wall")}
    assert bench_process.BARE_ASYNC_SPAWN in names
    assert "procio run_process (asyncio)" in names
