"""The process backend under pressure: frame limits on both sides, descriptors passed
and kept private, failed starts, workers that die while a fork holds their pipes, and
the signal dispositions that programs started from a worker see."""

from __future__ import annotations

import errno
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import (
    ProcessBackend,
    RemoteTraceback,
    SerializationError,
    WorkerError,
    WorkerPool,
    to_process,
)

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, which is Linux's")


# -- frame limits ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argument",
    [b"x" * 10_000, "y" * 10_000, [bytes([n]) * 600 for n in range(20)]],
    ids=["bytes", "str", "list"],
)
async def test_a_small_call_over_the_frame_limit_is_refused_before_it_is_sent(
    argument: object,
) -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        pid = await pool.run_sync(os.getpid)
        with pytest.raises(SerializationError, match="frame limit of 1000 bytes"):
            await pool.run_sync(funcs.echo, argument)
        # Nothing reached the worker: the same one takes the next call.
        assert await pool.run_sync(funcs.echo, "small") == "small"
        assert await pool.run_sync(os.getpid) == pid
        figures = pool.statistics()
        assert (figures.started, figures.broken) == (1, 0)
    guard.check()


async def test_a_call_just_under_the_frame_limit_goes_through() -> None:
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        assert await pool.run_sync(funcs.length, b"x" * 800) == 800


async def test_an_exception_over_the_frame_limit_comes_back_whole_when_its_object_fits() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        pid = await pool.run_sync(os.getpid)
        # Message and traceback each hold the 600,000 characters: 1.2 MB of description
        # over a 1 MiB limit, though the pickled exception alone fits.
        with pytest.raises(ValueError) as caught:
            await pool.run_sync(funcs.raise_long, 600_000)
        assert str(caught.value) == "x" * 600_000
        remote = caught.value.__cause__
        assert isinstance(remote, RemoteTraceback)
        assert "raise_long" in remote.traceback
        assert len(remote.traceback) < 1 << 20
        assert await pool.run_sync(os.getpid) == pid
        assert pool.statistics().broken == 0
    guard.check()


async def test_an_exception_too_big_to_travel_is_a_worker_error_naming_its_type() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        pid = await pool.run_sync(os.getpid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_long, 3_000_000)
        assert caught.value.type_name == "builtins.ValueError"
        assert caught.value.exception is None
        assert caught.value.message.startswith("xxxx")
        assert len(caught.value.message) < 1 << 20
        assert "raise_long" in caught.value.traceback
        assert await pool.run_sync(os.getpid) == pid
        assert pool.statistics().broken == 0
    guard.check()


async def test_an_exception_under_a_tiny_frame_limit_still_names_its_type() -> None:
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        pid = await pool.run_sync(os.getpid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_long, 5000)
        assert caught.value.type_name == "builtins.ValueError"
        assert await pool.run_sync(os.getpid) == pid


# -- bad arguments of the backend -------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"max_frame_length": 0}, ValueError, "max_frame_length"),
        ({"max_frame_length": -5}, ValueError, "max_frame_length"),
        ({"max_frame_length": 100}, ValueError, "max_frame_length"),
        ({"max_frame_length": 1.5e6}, TypeError, "max_frame_length"),
        ({"max_frame_length": True}, TypeError, "max_frame_length"),
        ({"output": "stdout"}, TypeError, "output"),
        ({"start_timeout": 0}, ValueError, "start_timeout"),
        ({"start_timeout": "soon"}, TypeError, "start_timeout"),
        ({"serializer": object()}, TypeError, "serializer"),
        ({"launcher": "nice"}, TypeError, "launcher"),
    ],
)
def test_bad_backend_arguments_are_refused_at_construction(
    arguments: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        ProcessBackend(**arguments)


def test_a_pool_refuses_a_bad_frame_limit_at_construction() -> None:
    with pytest.raises(ValueError, match="max_frame_length"):
        WorkerPool(max_frame_length=0)


# -- descriptors -------------------------------------------------------------------


@linux_only
async def test_close_fds_false_workers_started_together_hold_only_their_own_pipes() -> None:
    reports: list[dict[str, list[str]]] = []

    async def start_one() -> None:
        reports.append(await to_process.run_sync(funcs.worker_pipes, close_fds=False))

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(start_one)
    assert len(reports) == 4
    for mine in reports:
        assert set(mine["own"]) <= set(mine["all"])
        for other in reports:
            if other is not mine:
                shared = set(mine["all"]) & set(other["own"])
                assert not shared, f"a worker holds another worker's pipes: {shared}"


@pytest.mark.parametrize("close_fds", [True, False])
async def test_pass_fds_reach_the_worker_whatever_close_fds_says(close_fds: bool) -> None:
    read_end, write_end = os.pipe()  # not inheritable: only pass_fds can hand it over
    try:
        written = await to_process.run_sync(
            funcs.write_fd, write_end, b"ping", pass_fds=(write_end,), close_fds=close_fds
        )
        assert written == 4
        assert os.read(read_end, 10) == b"ping"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_close_fds_false_still_hands_over_inheritable_descriptors() -> None:
    read_end, write_end = os.pipe()
    os.set_inheritable(write_end, True)  # noqa: FBT003 - positional-only
    try:
        assert await to_process.run_sync(funcs.write_fd, write_end, b"pong", close_fds=False) == 4
        assert os.read(read_end, 10) == b"pong"
    finally:
        os.close(read_end)
        os.close(write_end)


def _limit_free_descriptors(free: int) -> None:
    """Lower RLIMIT_NOFILE so that exactly *free* more descriptors can be opened."""
    used = funcs.open_fds()
    limit = 0
    while free or limit in used:
        if limit not in used:
            free -= 1
        limit += 1
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


@linux_only
async def test_worker_starts_failing_for_want_of_descriptors_leak_nothing() -> None:
    limits = resource.getrlimit(resource.RLIMIT_NOFILE)
    failed: list[int] = []
    for free in range(14):
        guard = funcs.LeakGuard()
        async with WorkerPool(max_workers=1) as pool:
            _limit_free_descriptors(free)
            try:
                with anyio.fail_after(20):
                    assert await pool.run_sync(funcs.echo, free) == free
            except OSError as exc:
                assert exc.errno == errno.EMFILE, exc
                failed.append(free)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, limits)
            if failed and failed[-1] == free:
                # The failed start left nothing behind, even before the pool closes.
                guard.check()
            assert await pool.run_sync(funcs.echo, "after") == "after"
        guard.check()
    # Each of the four pipes failed in turn, then the launch itself.
    assert set(range(8)) <= set(failed), failed


# -- death while idle, a fork holding the pipes -------------------------------------


@linux_only
async def test_a_worker_dead_while_idle_is_replaced_though_a_fork_holds_its_pipes() -> None:
    async with WorkerPool(max_workers=1) as pool:
        first = await pool.run_sync(os.getpid)
        fork = await pool.run_sync(funcs.fork_lingering, 30)
        try:
            os.kill(first, signal.SIGKILL)
            # Dead before the call, and the event loop has not run since.
            os.waitid(os.P_PID, first, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222 - on purpose
            with anyio.fail_after(10):
                second = await pool.run_sync(os.getpid)
            assert second != first
            figures = pool.statistics()
            # The call never reached the dead worker: it did not fail.
            assert (figures.calls, figures.failures) == (3, 0)
        finally:
            os.kill(fork, signal.SIGKILL)


@linux_only
async def test_a_worker_seen_dead_while_idle_is_not_handed_a_call() -> None:
    async with WorkerPool(max_workers=1) as pool:
        first = await pool.run_sync(os.getpid)
        fork = await pool.run_sync(funcs.fork_lingering, 30)
        try:
            os.kill(first, signal.SIGKILL)
            with anyio.fail_after(10):
                while not funcs.pid_gone(first) or funcs.pid_exists(first):  # noqa: ASYNC110
                    await anyio.sleep(0.01)  # until the pool has reaped it: no event for that
                second = await pool.run_sync(os.getpid)
            assert second != first
            # The pool knew the worker was gone (the fork still holds its pipes) and
            # did not offer it the call: nothing counts as broken.
            figures = pool.statistics()
            assert (figures.calls, figures.failures, figures.broken) == (3, 0, 0)
        finally:
            os.kill(fork, signal.SIGKILL)


@linux_only
@pytest.mark.parametrize("fork_holds_the_pipes", [False, True], ids=["alone", "fork"])
async def test_a_call_the_worker_died_before_reading_runs_on_another_worker(
    fork_holds_the_pipes: bool,
) -> None:
    """The CALL went out whole to a worker that was alive, which died before it read it.

    The call never reached that worker: it runs on another one and does not fail, and
    nothing counts as broken. Stopping the worker makes it certain that it never reads,
    once it is stopped: asleep in a read, it would still take a call that came before.
    """
    import array
    import fcntl
    import termios

    def unread(fd: int) -> int:
        size = array.array("i", [0])
        fcntl.ioctl(fd, termios.FIONREAD, size)
        return size[0]

    async with WorkerPool(max_workers=1, idle_poll=0) as pool:
        first = await pool.run_sync(os.getpid)
        fork = await pool.run_sync(funcs.fork_lingering, 30) if fork_holds_the_pipes else None
        (slot,) = pool._slots
        request_fd = slot.worker._channel.request.fd  # type: ignore[attr-defined]
        os.kill(first, signal.SIGSTOP)
        results: list[int] = []
        try:
            with anyio.fail_after(10):
                while not funcs.pid_stopped(first):  # noqa: ASYNC110 - no event for that
                    await anyio.sleep(0.001)
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        results.append(await pool.run_sync(os.getpid))

                    tg.start_soon(call)
                    while not unread(request_fd):  # noqa: ASYNC110 - nothing to wait on
                        await anyio.sleep(0.001)
                    os.kill(first, signal.SIGKILL)
        finally:
            if fork is not None:
                os.kill(fork, signal.SIGKILL)
        assert len(results) == 1
        assert results[0] != first
        figures = pool.statistics()
        assert (figures.failures, figures.broken) == (0, 0)


# -- signals -----------------------------------------------------------------------


def _ignored_signals(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("SigIgn:"):
                return int(line.split()[1], 16)
    raise AssertionError(f"no SigIgn line for {pid}")


@linux_only
async def test_programs_a_worker_starts_can_be_stopped_with_sigint() -> None:
    async with WorkerPool(max_workers=1) as pool:
        child = await pool.run_sync(funcs.spawn_sleeper, 30)
        try:
            assert not _ignored_signals(child) & (1 << (signal.SIGINT - 1))
            os.kill(child, signal.SIGINT)
            with anyio.fail_after(10):
                while not funcs.pid_gone(child):  # noqa: ASYNC110 - another process's pid
                    await anyio.sleep(0.01)
        finally:
            if not funcs.pid_gone(child):
                os.kill(child, signal.SIGKILL)


async def test_sigint_neither_kills_nor_interrupts_a_busy_worker() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(os.getpid)
        async with anyio.create_task_group() as tg:

            async def interrupt_soon() -> None:
                await anyio.sleep(0.2)
                os.kill(pid, signal.SIGINT)

            tg.start_soon(interrupt_soon)
            assert await pool.run_sync(funcs.sleep_and_pid, 0.6) == pid
        assert await pool.run_sync(os.getpid) == pid
