"""The bare async rows of the spawn and read benchmarks: the floor's work, awaited.

Each is the floor's own loop with its blocking wait replaced by a wait on the event
loop, set beside procio's row to show what the loop's part costs by itself. A row must
really wait on the loop (else it measures the floor again under another name); the
read must take every byte (a read that took an empty pipe for the end would make the
row fast and wrong) and leave nothing behind. The spawn row's leaks and its place in
the table are tested with the other spawn rows (``test_benchmark_spawn``).
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

needs_pidfd = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no pidfd here")


def count_loop_waits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Make every ``anyio.wait_readable`` note its fd in the list returned."""
    waited: list[int] = []
    wait_readable = anyio.wait_readable

    async def counting(fd: int) -> None:
        waited.append(fd)
        await wait_readable(fd)

    monkeypatch.setattr(anyio, "wait_readable", counting)
    return waited


@needs_pidfd
def test_the_bare_async_spawn_waits_on_the_event_loop_once_per_spawn(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    waited = count_loop_waits(monkeypatch)
    bench_process.run_async(bench_process.spawn_bare_async, 5)
    assert len(waited) == 5 + 1  # and one spawn to warm up


def test_the_bare_async_read_reads_every_byte_and_leaves_nothing(
    procio_leak_check: LeakChecker,
) -> None:
    # The row asserts that it read exactly this many bytes.
    seconds = anyio.run(bench_process.read_bare_async, 4 << 20)
    procio_leak_check.check()
    assert seconds > 0


def test_the_bare_async_read_waits_on_the_event_loop_when_the_pipe_is_empty(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A child that sleeps before it writes has its reader find the pipe empty.
    monkeypatch.setattr(
        bench_process,
        "_head_command",
        lambda n: ["sh", "-c", f"sleep 0.1; exec head -c {n} /dev/zero"],
    )
    waited = count_loop_waits(monkeypatch)
    anyio.run(bench_process.read_bare_async, 1 << 20)
    assert waited


def test_the_bare_async_read_is_measured_beside_procio() -> None:
    names = {row.name for row in bench_process.read_rows(1 << 16, 1)}
    assert bench_process.BARE_ASYNC_READ in names
    assert "procio (asyncio)" in names
