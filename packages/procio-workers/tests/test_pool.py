"""WorkerPool: reuse, limits, the idle timer, initializer, retirement, figures, cleanup."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, PoolStatistics, WorkerPool

if TYPE_CHECKING:
    from tests.procio_held_start import HeldStart

    from tests import procio_map_testfuncs as mfuncs
    from tests import procio_pool_testfuncs as pfuncs
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_map_testfuncs as mfuncs
    import procio_pool_testfuncs as pfuncs
    import procio_workers_testfuncs as funcs
    from procio_held_start import HeldStart

pytestmark = pytest.mark.anyio


async def test_a_call_returns_its_result_and_the_pool_leaves_nothing_behind() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1) as pool:
        pid, value = await pool.run_sync(funcs.pid_and_echo, {"a": [1, 2]})
        assert value == {"a": [1, 2]}
        assert pid != os.getpid()
    guard.check()


@pytest.mark.parametrize("cancellable", [False, True])
@pytest.mark.parametrize("fresh", [False, True], ids=["pooled", "popen-option"])
async def test_a_call_cancelled_while_its_worker_starts_never_runs(
    tmp_path: Path, cancellable: bool, fresh: bool
) -> None:
    # The caller is cancelled while the call's worker starts, and that start ends with
    # no checkpoint after the cancellation (held here by a shielded wait, as a start
    # that completes in the same pass of the event loop would be). The call must not
    # be sent: it raises the cancellation, and the new worker is kept, idle, or, when
    # it was started for this one call (a Popen option), retired and reaped.
    ran = tmp_path / "ran"
    options = {"cwd": str(tmp_path)} if fresh else {}
    async with WorkerPool(max_workers=1) as pool:
        held = HeldStart(pool)
        with anyio.fail_after(30):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_then_release() -> None:
                        await held.started.wait()
                        scope.cancel()
                        held.release()

                    tg.start_soon(cancel_then_release)
                    # (What to_process.run_sync does with a Popen option.)
                    await pool._run(
                        funcs.sleep_then_write,
                        (0.0, str(ran)),
                        cancellable=cancellable,
                        options=options,
                        limiter=None,
                    )
            assert scope.cancelled_caught
            assert not ran.exists(), "the call ran although its caller was cancelled first"
            figures = pool.statistics()
            assert (figures.busy, figures.idle, figures.started) == (0, 0 if fresh else 1, 1)
            if fresh:
                with anyio.fail_after(10):
                    while not funcs.pid_gone(held.pids[0]):  # noqa: ASYNC110 - another process
                        await anyio.sleep(0.01)
            assert await pool.run_sync(funcs.echo, "after") == "after"
            assert pool.statistics().started == (2 if fresh else 1)


async def test_idle_workers_are_reused_most_recently_used_first() -> None:
    async with WorkerPool(max_workers=2) as pool:
        async with anyio.create_task_group() as tg:
            pids: list[int] = []

            async def slow() -> None:
                pids.append(await pool.run_sync(funcs.sleep_and_pid, 0.3))

            tg.start_soon(slow)
            tg.start_soon(slow)
        assert len(set(pids)) == 2
        # The worker that finished last is the most recently used: it takes the next calls.
        _, second = pids
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == second
        assert await pool.run_sync(funcs.sleep_and_pid, 0) == second
        assert pool.statistics().started == 2


async def test_max_workers_bounds_concurrent_workers() -> None:
    async with WorkerPool(max_workers=2) as pool:
        peak = 0

        async def one() -> None:
            nonlocal peak
            await pool.run_sync(funcs.sleep_and_pid, 0.1)
            peak = max(peak, pool.statistics().workers)

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(one)
        figures = pool.statistics()
        assert figures.started == 2
        assert peak <= 2
        assert figures.calls == 6


@pytest.mark.parametrize("waiter", ["run_sync", "map", "stream"])
async def test_a_worker_handed_to_a_waiting_call_is_not_taken_by_another(waiter: str) -> None:
    # The worker of a call that ends is owed to the call (or the map's or stream's
    # lane) waiting for it. The task whose call ended goes on at once, with no turn of
    # the event loop, to call again: it must wait its turn, not take the owed worker
    # (a pool that let it would start a second worker under max_workers=1).
    async with WorkerPool(max_workers=1, prestart=1) as pool:

        async def call_twice() -> None:
            await pool.run_sync(funcs.sleep_and_pid, 0.3)
            await pool.run_sync(funcs.sleep_and_pid, 0)

        async with anyio.create_task_group() as tg:
            tg.start_soon(call_twice)
            while not pool.statistics().busy:  # noqa: ASYNC110 - no event for this
                await anyio.sleep(0.01)
            # The first call runs: this one waits for its worker.
            if waiter == "run_sync":
                await pool.run_sync(funcs.sleep_and_pid, 0)
            elif waiter == "map":
                assert len([pid async for pid in pool.map(funcs.sleep_and_pid, [0, 0])]) == 2
            else:
                assert [i async for i in pool.stream(mfuncs.count_up, 3)] == [0, 1, 2]
        figures = pool.statistics()
        assert figures.started == 1
        assert figures.workers == 1


async def test_the_idle_timer_retires_workers_without_another_call() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, idle_timeout=0.3) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        assert pool.statistics().idle == 1
        with anyio.fail_after(5):
            while pool.statistics().workers or pid in _children():  # noqa: ASYNC110 - polls another process
                await anyio.sleep(0.05)
        assert pool.statistics().idle == 0
        assert await pool.run_sync(funcs.sleep_and_pid, 0) != pid
    guard.check()


def _absolute(paths: list[str]) -> list[str]:
    return [os.path.abspath(entry) for entry in paths]


def _children() -> set[int]:
    return funcs.child_pids()


async def test_the_initializer_runs_once_per_worker_with_its_arguments(tmp_path: Path) -> None:
    log = tmp_path / "init.log"
    async with WorkerPool(
        max_workers=1,
        initializer=funcs.record_initializer,
        initargs=(str(log), "ready"),
        max_tasks_per_worker=2,
    ) as pool:
        pids = [await pool.run_sync(funcs.sleep_and_pid, 0) for _ in range(4)]
    lines = log.read_text().splitlines()
    assert lines == [f"ready:{pids[0]}", f"ready:{pids[2]}"]


async def test_a_worker_retires_after_max_tasks() -> None:
    async with WorkerPool(max_workers=1, max_tasks_per_worker=3) as pool:
        pids = [await pool.run_sync(funcs.sleep_and_pid, 0) for _ in range(7)]
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5]
    assert len({pids[0], pids[3], pids[6]}) == 3


async def test_prestart_starts_workers_when_the_pool_opens() -> None:
    async with WorkerPool(max_workers=3, prestart=2) as pool:
        figures = pool.statistics()
        assert (figures.started, figures.idle, figures.calls) == (2, 2, 0)
        await pool.run_sync(funcs.sleep_and_pid, 0)
        assert pool.statistics().started == 2


async def test_the_interpreter_to_run_is_configurable_and_stdin_is_empty(
    tmp_path: Path,
) -> None:
    python = tmp_path / "python-for-workers"
    python.symlink_to(sys.executable)
    async with WorkerPool(max_workers=1, python=python) as pool:
        state = await pool.run_sync(funcs.worker_state)
    assert state["executable"] == str(python)
    assert state["path"] == _absolute(sys.path)
    assert state["stdin"] == b""


async def test_statistics_count_calls_failures_and_busy_workers(tmp_path: Path) -> None:
    running = tmp_path / "running"
    async with WorkerPool(max_workers=2) as pool:
        assert pool.statistics() == PoolStatistics(0, 0, 0, 0, 0, 0, 0)
        await pool.run_sync(funcs.echo, 1)
        with pytest.raises(funcs.CustomError):
            await pool.run_sync(funcs.fail_deep, 1)
        busy_seen = 0
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run_sync, pfuncs.announce_then_sleep, str(running), 0.5)
            with anyio.fail_after(30):
                while not running.exists():  # noqa: ASYNC110 - the worker creates it
                    await anyio.sleep(0.01)
            busy_seen = pool.statistics().busy
        figures = pool.statistics()
    assert busy_seen == 1
    assert (figures.calls, figures.failures, figures.broken) == (3, 1, 0)
    assert pool.statistics().workers == 0


async def test_a_cancelled_call_returns_once_its_killed_worker_is_reaped(
    tmp_path: Path,
) -> None:
    # A cancelled call kills its worker. A SIGKILL takes effect when the system gets to
    # it, and until then the process may still run the call's code: the call returns
    # only once the worker is gone and reaped (as AnyIO's does), and no figure of the
    # pool counts it as gone before.
    running = tmp_path / "running"
    seen: list[tuple[PoolStatistics, bool]] = []
    pid = 0

    async def call_then_look(scope: anyio.CancelScope) -> None:
        with scope:
            await pool.run_sync(pfuncs.announce_then_sleep, str(running), 30, cancellable=True)
        seen.append((pool.statistics(), funcs.pid_exists(pid)))

    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(30):
            scope = anyio.CancelScope()
            async with anyio.create_task_group() as tg:
                tg.start_soon(call_then_look, scope)
                while not running.exists() or not running.read_text():  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                pid = int(running.read_text())
                scope.cancel()
            ((figures, exists),) = seen
            assert not exists, "the cancelled call returned while its worker was not reaped"
            assert (figures.workers, figures.busy, figures.idle) == (0, 0, 0)
            assert await pool.run_sync(funcs.echo, "next") == "next"


async def test_a_closed_pool_refuses_calls() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pass
    with pytest.raises(anyio.ClosedResourceError, match="closed"):
        await pool.run_sync(funcs.echo, 1)


async def test_a_pool_refuses_calls_before_it_is_entered() -> None:
    pool = WorkerPool(max_workers=1)
    with pytest.raises(RuntimeError, match="async context manager"):
        await pool.run_sync(funcs.echo, 1)


async def test_closing_the_pool_kills_a_call_that_outlives_its_block(tmp_path: Path) -> None:
    guard = funcs.LeakGuard()
    running = tmp_path / "running"
    outcome: list[BaseException] = []
    async with anyio.create_task_group() as tg, WorkerPool(max_workers=1) as pool:

        async def long_call() -> None:
            try:
                await pool.run_sync(pfuncs.announce_then_sleep, str(running), 60)
            except Exception as exc:
                outcome.append(exc)

        tg.start_soon(long_call)
        # Close only once the function runs in its worker (not while the worker starts).
        with anyio.fail_after(30):
            while not running.exists():  # noqa: ASYNC110 - the worker creates it
                await anyio.sleep(0.01)
    assert len(outcome) == 1
    assert isinstance(outcome[0], BrokenWorkerProcess)
    assert "pool was closed during the call" in str(outcome[0])
    assert outcome[0].signal == signal.SIGKILL
    guard.check()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_workers": 0}, "max_workers"),
        ({"max_tasks_per_worker": 0}, "max_tasks_per_worker"),
        ({"idle_timeout": -1}, "idle_timeout"),
    ],
)
async def test_bad_settings_are_refused(kwargs: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        WorkerPool(**kwargs)  # type: ignore[arg-type]


def _sleep_state(pid: int) -> tuple[str, int]:
    """Return the main thread's scheduling state and its count of context switches."""
    state = funcs.proc_stat(pid)[0]
    switches = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                switches += int(line.split()[1])
    return state, switches


async def test_an_idle_worker_sleeps_instead_of_polling_for_calls() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        for value in range(50):  # calls in a row: the worker polls between them
            await pool.run_sync(funcs.echo, value)
        await anyio.sleep(0.1)  # well past the worker's brief poll after its answer
        samples = []
        for _ in range(20):
            samples.append(_sleep_state(pid))
            await anyio.sleep(0.01)
        # Asleep in the kernel every time we look, and never woken meanwhile: a worker
        # that polls is runnable ("R") and switches on every turn of its loop.
        assert {state for state, _ in samples} == {"S"}, samples
        assert samples[-1][1] - samples[0][1] <= 2, samples
        assert await pool.run_sync(funcs.echo, "still there") == "still there"
