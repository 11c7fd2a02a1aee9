"""The path used where pidfds are missing (macOS, old kernels, strict sandboxes).

The tests switch pidfds off, so that Linux runs the same code as macOS: a waiter thread
per child waits for its exit (with Popen.wait(), as on macOS, or with waitid as Linux
does) and closes a pipe to say so. With Popen.wait() run_process also does without
epoll, as on macOS, and uses one task per pipe.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest
from procio_process import _communicate, _waiting, open_process, run_process
from procio_process._posix import PosixProcess

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]


@pytest.fixture(autouse=True, params=["waitid", "Popen.wait"])
def without_pidfds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch pidfds off; the thread waits with waitid(WNOWAIT) or with Popen.wait()."""
    if request.param == "waitid" and sys.platform != "linux":
        pytest.skip("the thread uses waitid(WNOWAIT) on Linux only")
    monkeypatch.setattr(_waiting, "_pidfd_usable", False)
    monkeypatch.setattr(_waiting, "_USE_WAITID", request.param == "waitid")
    if request.param == "Popen.wait":
        monkeypatch.setattr(_communicate, "AVAILABLE", False)


async def test_wait_without_pidfd(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with await open_process(["sh", "-c", "sleep 0.1; exit 3"]) as process:
        # Not a pidfd: the read end of the waiter thread's pipe.
        assert isinstance(process, PosixProcess)
        assert process._exit_fd is not None
        assert stat.S_ISFIFO(os.fstat(process._exit_fd).st_mode)
        assert await process.wait() == 3
    check()


async def test_run_process_without_pidfd(leak_guard: StartGuard) -> None:
    check = leak_guard()
    result = await run_process(["cat"], input=b"x" * 300_000)
    assert result.stdout == b"x" * 300_000
    with pytest.raises(subprocess.CalledProcessError):
        await run_process(["false"])
    # A child that exits without reading its input: a plain result, no ExceptionGroup.
    assert (await run_process(["true"], input=b"x" * 2_000_000)).returncode == 0
    with pytest.raises(subprocess.CalledProcessError):
        await run_process(["false"], input=b"x" * 2_000_000)
    check()


async def test_cancelled_wait_without_pidfd_leaves_the_child_running() -> None:
    async with await open_process(["sleep", "30"]) as process:
        with anyio.move_on_after(0.05):
            await process.wait()
        assert process.returncode is None
        process.kill()
        assert await process.wait() == -signal.SIGKILL


async def test_cancellation_without_pidfd_reaps_the_child(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with anyio.create_task_group() as tg:
        process = await tg.start(partial(run_process, ["sleep", "30"]))
        tg.cancel_scope.cancel()
    assert process.returncode == -signal.SIGTERM
    check()


async def test_timeout_without_pidfd() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        await run_process(["sleep", "30"], timeout=0.1)


async def test_waiting_children_leave_the_default_thread_limiter_alone() -> None:
    # Where pidfds are missing, something has to block until each child exits. It must
    # not be a worker thread of AnyIO's default limiter: with more waiting children
    # than that limiter has tokens, an unrelated to_thread.run_sync() would stall.
    count = int(anyio.to_thread.current_default_thread_limiter().total_tokens) + 1
    processes = [await open_process(["sleep", "30"]) for _ in range(count)]
    try:
        async with anyio.create_task_group() as tg:
            for process in processes:
                tg.start_soon(process.wait)
            for _ in range(10):
                await anyio.lowlevel.checkpoint()  # every waiter is waiting now
            with anyio.fail_after(20):
                assert await anyio.to_thread.run_sync(lambda: "ran") == "ran"
            tg.cancel_scope.cancel()
    finally:
        for process in processes:
            process.kill()
            await process.aclose()
    assert all(process.returncode == -signal.SIGKILL for process in processes)


async def test_cancelled_waits_do_not_pile_up_threads() -> None:
    # One waiter per child, started once: waiting again after a cancelled wait reuses
    # it instead of leaving a thread behind, blocked until the child exits, per wait.
    async with await open_process(["sleep", "30"]) as process:
        counts = []
        for _ in range(5):
            with anyio.move_on_after(0.02):
                await process.wait()
            assert process.returncode is None
            counts.append(threading.active_count())
        process.kill()
        assert await process.wait() == -signal.SIGKILL
    assert counts == [counts[0]] * 5


# Trio only: there a Ctrl-C becomes a KeyboardInterrupt in whatever task runs. On asyncio
# the runner turns it into a cancellation of the main task, and a KeyboardInterrupt
# raised in any task ends the event loop itself.
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("task", ["_collect", "_feed"])
async def test_an_interrupt_in_a_reader_or_writer_task_comes_out_bare(
    leak_guard: StartGuard, monkeypatch: pytest.MonkeyPatch, task: str
) -> None:
    # Without epoll there is no one-task communicate(): run_process reads and writes the
    # pipes in tasks of its own, and on Trio a Ctrl-C may land in one of them. It must
    # come out as it does elsewhere, a bare KeyboardInterrupt (which ``except
    # KeyboardInterrupt`` catches), not inside the task group's exception group, with
    # the child stopped.
    if _communicate.AVAILABLE:
        pytest.skip("with communicate() the pipes are read in the caller's own task")
    from procio_process import _run

    real = getattr(_run, task)
    landed: list[str] = []

    async def interrupted(*args: Any) -> None:
        if not landed:  # once: the reader tasks that stop the child read on unharmed
            landed.append(task)
            raise KeyboardInterrupt
        await real(*args)

    monkeypatch.setattr(_run, task, interrupted)
    check = leak_guard()
    with pytest.raises(KeyboardInterrupt):
        await run_process(["sh", "-c", "cat; sleep 30"], input=b"some input")
    assert landed == [task]
    monkeypatch.setattr(_run, task, real)
    check()
    assert (await run_process(["cat"], input=b"after")).stdout == b"after"
