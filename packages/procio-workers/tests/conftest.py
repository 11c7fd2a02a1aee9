"""Shared helpers of the worker layer's tests: leak checks, fixtures, importable functions.

Functions that run in a worker must be importable there by module name, so they live
in ``procio_workers_testfuncs`` and this folder goes on ``sys.path`` (the worker gets
the parent's ``sys.path``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from procio_workers import WorkerPool

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

if TYPE_CHECKING:
    from tests.procio_empty_reads import EmptyReads
else:
    from procio_empty_reads import EmptyReads  # found on the path just set


@pytest.fixture(scope="session", autouse=True)
def _libuv_signal_pipe() -> None:
    """Let libuv open its process-wide signal pipe before any leak check's snapshot.

    The first uvloop loop of a process opens a pipe pair that stays open for the life of
    the process; without this, whichever leak-checked test happens to be the first on
    uvloop in a run would report that pipe as its leak.
    """
    if sys.platform != "win32":
        import uvloop

        uvloop.new_event_loop().close()


@pytest.fixture
def empty_reads(monkeypatch: pytest.MonkeyPatch) -> EmptyReads:
    """Count every read of a response pipe that finds it empty, from now on.

    Patched before the test opens a pool: a worker keeps the bound method it was given.
    """
    from procio_workers import _channel

    counter = EmptyReads()
    original = _channel._ResponsePipe.readinto

    def counted(self: _channel._ResponsePipe, view: memoryview) -> int | None:
        count = original(self, view)
        if count is None:
            counter.count += 1
        return count

    monkeypatch.setattr(_channel._ResponsePipe, "readinto", counted)
    return counter


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    """A pool of two workers, open for the test."""
    async with WorkerPool(max_workers=2) as opened:
        yield opened


@pytest.fixture
def no_cpu_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide how long the workers and the loop really waited for a CPU.

    Beside other tests (or on a busy machine) they wait now and then, and a map then
    rightly starts its other lanes; a test that counts on one lane would fail for what
    the machine did. A test of such waits fakes them on top of this.
    """
    from procio_workers import _pool

    real = _pool._cpu_seconds

    def never_waited(pid: int | str | None, fd: int = -1) -> tuple[float, float] | None:
        got = real(pid, fd)
        return None if got is None else (got[0], 0.0)

    monkeypatch.setattr(_pool, "_cpu_seconds", never_waited)
