"""The order of a call's steps: the CALL goes out before the call's schedule point."""

from __future__ import annotations

import array
import fcntl
import os
import signal
import sys
import termios
import threading
import time
import types
from collections.abc import Awaitable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from procio_workers import SerializationError, WorkerPool
from procio_workers._process_backend import ProcessWorker

if TYPE_CHECKING:
    from tests.procio_empty_reads import EmptyReads

    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs
    from procio_empty_reads import EmptyReads

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="FIONREAD on a pipe: Linux")

T = TypeVar("T")


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
                # Asleep in a read, the worker would still take a call sent before the
                # stop lands.
                while not funcs.pid_stopped(pid):  # noqa: ASYNC110 - no event for that
                    await anyio.sleep(0.001)

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


@pytest.mark.anyio
@pytest.mark.parametrize("gap", [0.0, 0.02], ids=["worker-awake", "worker-asleep"])
async def test_a_cancellation_at_the_schedule_point_waits_for_the_next_checkpoint(
    gap: float,
) -> None:
    """A call that was sent is under way: a cancel scope cancelled by another task while
    the call sits at its schedule point does not take the result away (the function
    ran); the cancellation lands at the caller's next checkpoint, and the worker stays.

    For a worker gone to sleep (calls *gap* apart), the wait for its reply is the
    schedule point.
    """
    results: list[int] = []
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(abs, -1) == 1
            (slot,) = pool._slots
            for attempt in range(20):
                await anyio.sleep(gap)
                go = anyio.Event()
                with anyio.CancelScope() as scope:

                    async def canceller(
                        scope: anyio.CancelScope = scope, go: anyio.Event = go
                    ) -> None:
                        await go.wait()
                        scope.cancel()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(canceller)
                        await anyio.lowlevel.checkpoint()  # the canceller now waits
                        go.set()  # it runs at the next schedule point: the call's
                        results.append(await pool.run_sync(abs, -attempt))
                        await anyio.lowlevel.checkpoint()
                        pytest.fail("the cancellation did not land at the next checkpoint")
                assert scope.cancelled_caught
            assert pool._slots == {slot}, "the worker was killed"
            assert await pool.run_sync(abs, -99) == 99
    assert results == list(range(20))


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("gap", [0.0, 0.02], ids=["worker-awake", "worker-asleep"])
async def test_a_native_asyncio_cancel_at_the_schedule_point_is_not_held_back(
    anyio_backend: str, gap: float
) -> None:
    """``Task.cancel()`` (asyncio's own timeouts and task groups use it) is not a cancel
    scope of AnyIO's: no shield holds it, and it ends the call at its schedule point.
    The worker, which may still be running the call, goes; the next call gets its own
    result, not the stale one.
    """
    import asyncio

    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(abs, -1) == 1
            (slot,) = pool._slots
            await anyio.sleep(gap)
            task = asyncio.current_task()
            assert task is not None
            go = asyncio.Event()

            async def canceller() -> None:
                await go.wait()
                task.cancel()

            helper = asyncio.ensure_future(canceller())
            await asyncio.sleep(0)
            go.set()
            with pytest.raises(asyncio.CancelledError):
                await pool.run_sync(abs, -2)
            if sys.version_info >= (3, 11):
                task.uncancel()
            await helper
            assert slot not in pool._slots
            assert await pool.run_sync(abs, -3) == 3


@types.coroutine
def _counting_suspensions(
    awaitable: Awaitable[T], suspensions: list[int]
) -> Generator[Any, Any, T]:
    """Await *awaitable*, adding to ``suspensions[0]`` each time it suspends the task.

    Every suspension of a task, on asyncio and on Trio alike, is a value yielded up
    through its chain of awaits to the event loop: counted here on its way.
    """
    steps = awaitable.__await__()
    try:
        request = steps.send(None)
        while True:
            suspensions[0] += 1
            try:
                answer = yield request
            except BaseException as exc:  # a cancellation, thrown in by the loop
                request = steps.throw(exc)
            else:
                request = steps.send(answer)
    except StopIteration as stop:
        result: T = stop.value
        return result


@pytest.mark.anyio
async def test_a_call_to_a_sleeping_worker_reads_nothing_before_its_reply_is_there(
    empty_reads: EmptyReads,
) -> None:
    """A worker gone to sleep takes longer to wake than a pass of the event loop: the
    call waits for its reply at once (that wait is its schedule point), and makes no
    read that can only find the pipe empty. The call still suspends the caller, so that
    other tasks run, even when its reply is there by the time it waits (on a loaded
    machine the parent may be held up longer than the worker takes).
    """
    with anyio.fail_after(30):
        async with WorkerPool(1, idle_poll=0) as pool:
            assert await pool.run_sync(abs, -1) == 1
            empty_reads.count = 0
            for _ in range(10):
                await anyio.sleep(0.01)  # the worker sleeps, and the parent knows
                suspensions = [0]
                call = pool.run_sync(time.sleep, 0.005)
                await _counting_suspensions(call, suspensions)
                assert suspensions[0] >= 1, "the call did not let other tasks run"
    assert empty_reads.count == 0
