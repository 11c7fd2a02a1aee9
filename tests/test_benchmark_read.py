"""The read benchmark's bare async row: the floor's reads, with waits on the event loop.

It stands beside procio's stream as the least an async reader of the same pipe does.
It must read every byte (a read that took an empty pipe for the end would make the
row fast and wrong) and leave neither the pipe nor the child behind.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest
from procio_process.pytest_plugin import LeakChecker

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_process: Any = importlib.import_module("bench_process")


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
    # A row that never waited would be a blocking read: the floor again under another
    # name. A child that sleeps before it writes has its reader find the pipe empty.
    size = 1 << 20
    monkeypatch.setattr(
        bench_process,
        "_head_command",
        lambda n: ["sh", "-c", f"sleep 0.1; exec head -c {n} /dev/zero"],
    )
    waited: list[int] = []
    wait_readable = anyio.wait_readable

    async def counting(fd: int) -> None:
        waited.append(fd)
        await wait_readable(fd)

    monkeypatch.setattr(bench_process.anyio, "wait_readable", counting)
    anyio.run(bench_process.read_bare_async, size)
    assert waited


def test_the_bare_async_read_is_measured_beside_procio() -> None:
    names = {row.name for row in bench_process.read_rows(1 << 16, 1)}
    assert bench_process.BARE_ASYNC_READ in names
    assert "procio (asyncio)" in names
