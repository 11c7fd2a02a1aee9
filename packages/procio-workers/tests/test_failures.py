"""What goes wrong in a worker stays there: errors, crashes, bad frames, bad input."""

from __future__ import annotations

import os
import signal
import struct
import threading
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.lowlevel import checkpoint
from procio_workers import (
    BrokenWorkerProcess,
    RemoteTraceback,
    SerializationError,
    WorkerError,
    WorkerPool,
    _process_backend,
    _wire,
)

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio


async def test_the_functions_own_traceback_comes_back_with_its_exception() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with pytest.raises(funcs.CustomError) as caught:
            await pool.run_sync(funcs.fail_deep, 7)
    assert caught.value.code == 7
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "inner_helper_frame" in cause.traceback
    assert "fail_deep" in "".join(traceback.format_exception(caught.value))


async def test_a_worker_killed_mid_call_fails_only_that_call() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=2) as pool:
        with pytest.raises(BrokenWorkerProcess) as caught:
            await pool.run_sync(funcs.kill_self, signal.SIGKILL)
        assert isinstance(caught.value, anyio.BrokenWorkerProcess)
        assert caught.value.signal == signal.SIGKILL
        assert caught.value.pid is not None
        assert str(caught.value.pid) in str(caught.value)
        assert await pool.run_sync(funcs.echo, "still here") == "still here"
        figures = pool.statistics()
        assert (figures.broken, figures.failures, figures.calls) == (1, 1, 2)
    guard.check()


async def test_a_worker_that_exits_reports_its_status_and_last_stderr_lines() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with pytest.raises(BrokenWorkerProcess) as caught:
            await pool.run_sync(funcs.die_with_stderr, 3, "line one\nfatal: out of luck\n")
        assert caught.value.exit_code == 3
        assert caught.value.signal is None
        assert caught.value.stderr_tail[-2:] == ("line one", "fatal: out of luck")
        assert "fatal: out of luck" in str(caught.value)
        assert await pool.run_sync(funcs.echo, 1) == 1


@pytest.mark.parametrize(
    ("function", "args", "kind"),
    [(funcs.exit_with, (4,), SystemExit), (funcs.interrupt, (), KeyboardInterrupt)],
    ids=["exit", "interrupt"],
)
async def test_system_exit_and_keyboard_interrupt_reach_the_caller_as_errors(
    function: Callable[..., object], args: tuple[object, ...], kind: type[BaseException]
) -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(function, *args)
        assert type(caught.value.exception) is kind
        assert caught.value.type_name == f"builtins.{kind.__name__}"
        if kind is SystemExit:
            assert isinstance(caught.value.exception, SystemExit)
            assert caught.value.exception.code == 4
        # The worker survives it and takes the next call.
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == pid


async def test_sigint_does_not_kill_an_idle_worker() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        os.kill(pid, signal.SIGINT)
        await anyio.sleep(0.2)
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == pid


async def test_an_unpicklable_argument_fails_before_a_worker_is_reserved() -> None:
    async with WorkerPool(max_workers=1) as pool:
        # A lock cannot be pickled, not even by value (a lambda can, with cloudpickle).
        with pytest.raises(SerializationError, match="cannot send"):
            await pool.run_sync(funcs.echo, threading.Lock())
        assert pool.statistics().started == 0


async def test_an_unpicklable_result_is_a_clear_error_and_the_worker_stays() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        with pytest.raises(SerializationError, match="result"):
            await pool.run_sync(funcs.unpicklable_result)
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == pid


async def test_an_exception_the_parent_cannot_import_is_a_worker_error(tmp_path: Path) -> None:
    (tmp_path / "worker_only_module.py").write_text(
        "class OnlyHereError(Exception):\n    pass\n", encoding="utf-8"
    )
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_unimportable, str(tmp_path))
        assert caught.value.type_name == "worker_only_module.OnlyHereError"
        assert "cannot import" in caught.value.message
        assert "raise_unimportable" in caught.value.traceback
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == pid


@pytest.mark.parametrize(
    ("garbage", "then_exit"),
    [
        pytest.param(b"\xee\x00\x00\x01", False, id="unknown-kind"),
        pytest.param(
            struct.pack(">BBH", _wire.RESULT, 0, 1) + struct.pack(">Q", 1 << 50),
            False,
            id="oversized",
        ),
        pytest.param(struct.pack(">BBH", _wire.RESULT, 0, 1) + b"\x00\x00", True, id="truncated"),
    ],
)
async def test_a_malformed_frame_breaks_the_worker_without_hanging(
    garbage: bytes, then_exit: bool
) -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        with anyio.fail_after(10), pytest.raises(BrokenWorkerProcess):
            await pool.run_sync(funcs.write_to_protocol, garbage, then_exit)
        assert await pool.run_sync(funcs.echo, "fine") == "fine"
    guard.check()


async def test_a_result_over_the_frame_limit_is_refused_by_the_worker_which_lives_on() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        first = await pool.run_sync(os.getpid)
        with pytest.raises(SerializationError, match=r"frame limit \(max_frame_length=1048576\)"):
            await pool.run_sync(os.urandom, 2 << 20)
        assert await pool.run_sync(os.getpid) == first
        assert pool.statistics().started == 1
    guard.check()


async def test_a_cancellable_call_kills_its_worker_when_cancelled() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1) as pool:
        first = await pool.run_sync(funcs.sleep_and_pid, 0)
        with anyio.move_on_after(0.3) as scope:
            await pool.run_sync(funcs.sleep_and_pid, 30, cancellable=True)
        assert scope.cancelled_caught
        assert await pool.run_sync(funcs.sleep_and_pid, 0) != first
        assert pool.statistics().started == 2
    guard.check()


async def test_a_call_that_is_not_cancellable_runs_to_completion(tmp_path: Path) -> None:
    started = tmp_path / "started"
    marker = tmp_path / "marker"
    async with WorkerPool(max_workers=1) as pool, anyio.create_task_group() as tg:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)  # warm: no cold start below
        scope = anyio.CancelScope()

        async def cancel_once_running() -> None:
            with anyio.fail_after(10):
                while not started.exists():  # noqa: ASYNC110 - another process's file
                    await anyio.sleep(0.01)
            scope.cancel()

        tg.start_soon(cancel_once_running)
        with scope:
            # Cancelled while the function runs: the call goes on to its end anyway.
            await pool.run_sync(funcs.announce_then_write, str(started), 0.5, str(marker))
            await checkpoint()
        assert scope.cancelled_caught
        assert marker.read_text() == "done"
        # The worker was not killed: it is back in the pool and takes the next call.
        figures = pool.statistics()
        assert (figures.started, figures.idle, figures.broken) == (1, 1, 0)
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == pid


async def test_a_call_cancelled_before_it_starts_reserves_no_worker() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pool.run_sync(funcs.echo, 1)
        assert pool.statistics() == pool.statistics().__class__(0, 0, 0, 0, 0, 0, 0)


async def test_a_failing_initializer_fails_the_call_that_started_the_worker() -> None:
    async with WorkerPool(max_workers=1, initializer=funcs.fail_deep, initargs=(2,)) as pool:
        with pytest.raises(BrokenWorkerProcess, match="initializer"):
            await pool.run_sync(funcs.echo, 1)
        assert pool.statistics().workers == 0


async def test_a_worker_that_dies_while_idle_is_reaped_and_replaced() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        os.kill(pid, signal.SIGKILL)
        with anyio.fail_after(5):
            while pid in funcs.child_pids():  # noqa: ASYNC110 - polls another process
                await anyio.sleep(0.05)
        assert await pool.run_sync(funcs.sleep_and_pid, 0) != pid
        assert pool.statistics().broken == 0


async def test_programs_a_function_starts_do_not_inherit_the_protocol_pipes() -> None:
    async with WorkerPool(max_workers=1) as pool:
        assert await pool.run_sync(funcs.protocol_fds_inheritable) == (False, False)


async def test_a_call_given_a_worker_that_died_idle_runs_on_another_one() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        os.kill(pid, signal.SIGKILL)
        # Wait without letting the event loop run, so the pool cannot have noticed.
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)  # noqa: ASYNC222 - on purpose
        assert await pool.run_sync(funcs.sleep_and_pid, 0) != pid
        figures = pool.statistics()
        # It died idle: not a worker lost during a call, and the call did not fail.
        assert (figures.broken, figures.failures, figures.calls) == (0, 0, 2)


async def test_process_workers_refuse_windows_clearly(monkeypatch: pytest.MonkeyPatch) -> None:
    # Switched on here, as it is on Windows: the call fails before any worker starts.
    monkeypatch.setattr(_process_backend, "POSIX", False)
    async with WorkerPool(max_workers=1) as pool:
        with pytest.raises(NotImplementedError, match=r"anyio\.to_process\.run_sync"):
            await pool.run_sync(funcs.echo, 1)
        assert pool.statistics().started == 0
