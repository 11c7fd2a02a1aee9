"""The order of a call's steps: the CALL goes out before the call's schedule point."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import sys
import termios
import threading

import anyio
import anyio.lowlevel
import pytest
from procio_workers import SerializationError, WorkerPool
from procio_workers._process_backend import ProcessWorker

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FIONREAD on a pipe: Linux")


def _waiting_bytes(fd: int) -> int:
    size = array.array("i", [0])
    fcntl.ioctl(fd, termios.FIONREAD, size)
    return size[0]


@pytest.mark.anyio
async def test_other_tasks_run_while_the_call_is_with_the_worker() -> None:
    """The schedule point of run_sync comes after the CALL is written, not before.

    The worker is stopped, so what is written stays in its request pipe: a sibling that
    runs at the call's schedule point finds the call there.
    """
    seen: list[int] = []
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(abs, -1) == 1
            (slot,) = pool._slots
            worker = slot.worker
            assert isinstance(worker, ProcessWorker)
            pid = worker.process.pid
            await anyio.sleep(0.05)  # the worker sleeps (no polling) and the parent knows
            os.kill(pid, signal.SIGSTOP)
            try:

                async def sibling() -> None:
                    seen.append(_waiting_bytes(worker._channel.request.fd))
                    os.kill(pid, signal.SIGCONT)

                async with anyio.create_task_group() as tg:
                    tg.start_soon(sibling)
                    assert await pool.run_sync(abs, -2) == 2
            finally:
                os.kill(pid, signal.SIGCONT)
    assert len(seen) == 1
    assert seen[0] > 0, "the sibling ran before the call was sent"


@pytest.mark.anyio
async def test_an_already_cancelled_caller_sends_nothing() -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(abs, -1) == 1
            (slot,) = pool._slots
            worker = slot.worker
            assert isinstance(worker, ProcessWorker)
            pid = worker.process.pid
            os.kill(pid, signal.SIGSTOP)
            try:
                with anyio.CancelScope() as scope:
                    scope.cancel()
                    await pool.run_sync(abs, -2)
                assert scope.cancelled_caught
                assert _waiting_bytes(worker._channel.request.fd) == 0
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await pool.run_sync(abs, -3) == 3


@pytest.mark.anyio
async def test_a_loop_of_calls_that_fail_before_sending_lets_other_tasks_run() -> None:
    """Arguments that cannot be pickled fail at once, yet each call is a schedule point."""
    ticks = 0
    unpicklable = [threading.Lock()]

    async def sibling() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(30):
        async with WorkerPool(1) as pool, anyio.create_task_group() as tg:
            tg.start_soon(sibling)
            await anyio.lowlevel.checkpoint()
            before = ticks
            for _ in range(20):
                with pytest.raises(SerializationError):
                    await pool.run_sync(len, unpicklable)
            ran = ticks - before
            tg.cancel_scope.cancel()
    # The sibling ran at (nearly) every call: not zero times, as it would if the failing
    # calls never yielded.
    assert ran >= 10
