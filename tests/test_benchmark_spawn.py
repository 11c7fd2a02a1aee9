"""The spawn benchmark's row without an event loop: procio's own spawn, blocking waits.

It stands beside ``run_process`` to show how much of procio's distance to the floor is
the spawn and how much the event loop. Run thousands of times a round, it must leave
nothing behind: a pipe left open would pile up until the descriptors run out, a child
left unreaped would stay a zombie, and either would slow the rows measured after it.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_process: Any = importlib.import_module("bench_process")

pytestmark = pytest.mark.skipif(
    not bench_process._spawn.AVAILABLE, reason="procio spawns through Popen here"
)


def _open_fds() -> set[int]:
    return {int(name) for name in os.listdir("/proc/self/fd")}


def _children_named_true() -> list[psutil.Process]:
    found = []
    for child in psutil.Process().children():
        try:
            if child.name() == "true":
                found.append(child)
        except psutil.NoSuchProcess:
            continue
    return found


def test_the_row_without_an_event_loop_leaves_no_pipe_and_no_child() -> None:
    before = _open_fds()
    wall, cpu = bench_process.spawn_procio_blocking(20)
    # (A listing of /proc/self/fd opens a descriptor of its own while it reads.)
    assert _open_fds() == before
    assert _children_named_true() == []
    assert wall > 0
    assert cpu >= 0


def test_the_row_without_an_event_loop_is_measured_beside_run_process() -> None:
    rows = bench_process.spawn_rows(1, 1)
    names = {row.name for row in rows if row.figure.startswith("spawn-wall")}
    assert "procio's spawn, no event loop: blocking reads + wait" in names
    assert "procio run_process (asyncio)" in names
