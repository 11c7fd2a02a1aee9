"""WorkerPool and to_process under stress: interrupts, checkpoints, closing, the default pool."""

from __future__ import annotations

import itertools
import logging
import os
import random
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, SerializationError, WorkerPool, to_process
from procio_workers._process_backend import ProcessWorker
from procio_workers.abc import Launcher, Worker, WorkerBackend

if TYPE_CHECKING:
    from tests.procio_scripts import run_script

    from tests import procio_pool_testfuncs as pfuncs
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_pool_testfuncs as pfuncs
    import procio_workers_testfuncs as funcs
    from procio_scripts import run_script


async def _wait_for(path: Path) -> None:
    with anyio.fail_after(30):
        while not await anyio.Path(path).exists():  # noqa: ASYNC110 - another process makes it
            await anyio.sleep(0.01)


# -- 1. an interrupt while a call waits never hands its result to the next call ------


@pytest.mark.anyio
async def test_a_keyboard_interrupt_while_waiting_does_not_shift_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = funcs.LeakGuard()
    real_finish = ProcessWorker.finish_call
    interrupted: list[int | None] = []

    async def finish_interrupted(self: ProcessWorker) -> object:
        # The interrupt lands while the reply is awaited, as a real SIGINT does on Trio
        # (and on asyncio, inside the task's own code).
        if not interrupted:
            interrupted.append(self.pid)
            await anyio.sleep(0.05)
            raise KeyboardInterrupt
        return await real_finish(self)

    async with WorkerPool(max_workers=1) as pool:
        first_pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        monkeypatch.setattr(ProcessWorker, "finish_call", finish_interrupted)
        with pytest.raises(KeyboardInterrupt):
            await pool.run_sync(pfuncs.sleep_then_return, "first", 0.5)
        assert interrupted == [first_pid]
        # The interrupted call returned once its killed worker was reaped.
        assert not funcs.pid_exists(first_pid)
        # Each later call gets its own result, never the one before it.
        assert await pool.run_sync(funcs.echo, "second") == "second"
        assert await pool.run_sync(funcs.echo, "third") == "third"
        # The interrupted worker was let go: a new one took the later calls.
        assert pool.statistics().started == 2
    guard.check()


@pytest.mark.anyio
async def test_random_interrupts_and_cancellations_never_mix_up_results(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(20261201)
    guard = funcs.LeakGuard()
    real_finish = ProcessWorker.finish_call
    interrupts = 0
    interrupting = True

    async def sometimes_interrupted(self: ProcessWorker) -> object:
        nonlocal interrupts
        if interrupting and rng.random() < 0.2:
            await anyio.lowlevel.checkpoint()  # (a cancellation may land here instead)
            interrupts += 1
            raise KeyboardInterrupt
        return await real_finish(self)

    monkeypatch.setattr(ProcessWorker, "finish_call", sometimes_interrupted)
    outcomes: dict[str, int] = {"own": 0, "interrupted": 0, "cancelled": 0}
    async with WorkerPool(max_workers=2) as pool:

        async def one(value: int) -> None:
            cancellable = rng.random() < 0.5
            seconds = rng.choice([0.0, 0.001, 0.005])
            with anyio.move_on_after(rng.choice([0.0, 0.002, 0.02, 30.0])) as scope:
                try:
                    got = await pool.run_sync(
                        pfuncs.sleep_then_return, value, seconds, cancellable=cancellable
                    )
                except KeyboardInterrupt:
                    outcomes["interrupted"] += 1
                    return
                assert got == value
                outcomes["own"] += 1
            if scope.cancelled_caught:
                outcomes["cancelled"] += 1

        with anyio.fail_after(50):
            for batch in range(12):
                async with anyio.create_task_group() as tg:
                    for value in range(batch * 6, batch * 6 + 6):
                        tg.start_soon(one, value)
        interrupting = False
        assert await pool.run_sync(pfuncs.sleep_then_return, "last", 0.001) == "last"
    assert interrupts == outcomes["interrupted"] > 0
    assert outcomes["own"] > 0
    assert sum(outcomes.values()) == 72
    guard.check()


@pytest.mark.anyio
async def test_a_keyboard_interrupt_during_the_initializer_discards_that_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    guard = funcs.LeakGuard()
    log = tmp_path / "init.log"
    real_finish = ProcessWorker.finish_call
    interrupted: list[int | None] = []

    async def first_interrupted(self: ProcessWorker) -> object:
        if not interrupted:
            interrupted.append(self.pid)
            raise KeyboardInterrupt
        return await real_finish(self)

    monkeypatch.setattr(ProcessWorker, "finish_call", first_interrupted)
    async with WorkerPool(
        max_workers=1,
        initializer=pfuncs.sleep_then_return,
        initargs=(None, 0.2),
    ) as pool:
        with pytest.raises(KeyboardInterrupt):
            await pool.run_sync(funcs.record_initializer, str(log), "first")
        assert pool.statistics().workers == 0
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        assert pid not in interrupted
        assert await pool.run_sync(funcs.echo, "mine") == "mine"
    assert not log.exists()  # the interrupted call never ran
    guard.check()


@pytest.mark.anyio
async def test_running_out_of_descriptors_fails_the_call_and_the_pool_recovers() -> None:
    import resource

    guard = funcs.LeakGuard()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    async with WorkerPool(max_workers=1, max_tasks_per_worker=1) as pool:
        assert await pool.run_sync(funcs.echo, 1) == 1
        # No room for any new descriptor: the next worker cannot even get its pipes.
        open_now = funcs.open_fds()
        lowest_free = min(set(range(len(open_now) + 1)) - open_now)
        resource.setrlimit(resource.RLIMIT_NOFILE, (lowest_free, hard))
        try:
            with pytest.raises(OSError) as caught:
                await pool.run_sync(funcs.echo, 2)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert caught.value.errno is not None
        figures = pool.statistics()
        assert (figures.calls, figures.failures, figures.busy) == (2, 1, 0)
        assert await pool.run_sync(funcs.echo, 3) == 3
    guard.check()


TRIO_SIGINT = """
import anyio
from procio_workers import WorkerPool
import procio_pool_testfuncs as pfuncs
import procio_workers_testfuncs as funcs

async def main():
    async with WorkerPool(max_workers=1) as pool:
        await pool.run_sync(funcs.echo, 0)
        try:
            await pool.run_sync(pfuncs.interrupt_parent_then_return, "first", 0.5)
        except KeyboardInterrupt:
            print("interrupted")
        print(await pool.run_sync(funcs.echo, "second"))
        print(await pool.run_sync(funcs.echo, "third"))

anyio.run(main, backend="trio")
"""


def test_a_real_sigint_on_trio_does_not_shift_results(tmp_path: Path) -> None:
    # On Trio a SIGINT reaches the main task as a KeyboardInterrupt wherever it waits,
    # shielded or not; a program may catch it and go on.
    out = run_script(tmp_path, TRIO_SIGINT)
    assert out == ["interrupted", "second", "third"]


# -- 2. every call is a checkpoint ------------------------------------------------------


async def _call_pool(pool: WorkerPool, value: int) -> object:
    return await pool.run_sync(funcs.echo, value)


async def _call_default(pool: WorkerPool, value: int) -> object:
    return await to_process.run_sync(funcs.echo, value)


WARM = 20
CALLERS = [pytest.param(_call_pool, id="pool"), pytest.param(_call_default, id="to_process")]


@pytest.mark.anyio
@pytest.mark.parametrize("call", CALLERS)
async def test_other_tasks_run_between_consecutive_warm_calls(
    call: Callable[[WorkerPool, int], Any],
) -> None:
    async with WorkerPool(max_workers=1) as pool:
        for value in range(5):  # warm: the worker answers within microseconds now
            assert await call(pool, value) == value
        ticks = 0

        async def sibling() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await anyio.lowlevel.checkpoint()

        between: list[int] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(sibling)
            await anyio.lowlevel.checkpoint()
            for value in range(100):
                before = ticks
                assert await call(pool, value) == value
                between.append(ticks - before)
            tg.cancel_scope.cancel()
    # Trio runs the tasks that are ready in one batch in a random order, so one call's
    # schedule point may come just after the sibling's turn in that batch; over two
    # calls, the sibling always gets one.
    pairs = [a + b for a, b in itertools.pairwise(between)]
    assert min(pairs) >= 1, between


@pytest.mark.anyio
@pytest.mark.parametrize("call", CALLERS)
async def test_a_cancellation_from_another_task_stops_a_loop_of_calls_soon(
    call: Callable[[WorkerPool, int], Any],
) -> None:
    async with WorkerPool(max_workers=1) as pool:
        await call(pool, 0)
        done = 0
        with anyio.CancelScope() as scope:

            async def canceller() -> None:
                # A deadline's timer, or any task, needs a few turns of the event loop
                # to cancel a caller: each call must give it one.
                for _ in range(5):
                    await anyio.lowlevel.checkpoint()
                scope.cancel()

            async with anyio.create_task_group() as tg:
                for value in range(5000):
                    if value == WARM:
                        # Once the worker answers within microseconds.
                        tg.start_soon(canceller)
                    await call(pool, value)
                    done += 1
        assert scope.cancelled_caught
        # Five turns take at most ten calls (two on Trio, one on asyncio), and the
        # cancellation stops the next one.
        assert done <= WARM + 11, done


@pytest.mark.anyio
async def test_an_already_cancelled_caller_runs_nothing(tmp_path: Path) -> None:
    trace = tmp_path / "trace"
    async with WorkerPool(max_workers=1) as pool:
        await pool.run_sync(funcs.echo, 0)
        with anyio.CancelScope() as scope:
            scope.cancel()
            await pool.run_sync(pfuncs.record_call, str(trace))
        assert scope.cancelled_caught
        with anyio.move_on_after(-1) as past:
            await pool.run_sync(pfuncs.record_call, str(trace), cancellable=True)
        assert past.cancelled_caught
        with anyio.move_on_after(-1) as past_default:
            await to_process.run_sync(pfuncs.record_call, str(trace))
        assert past_default.cancelled_caught
        assert not trace.exists()
        assert pool.statistics().calls == 1
        assert await pool.run_sync(funcs.echo, "after") == "after"


# -- 3. closing while a call starts its worker ------------------------------------------


class SlowStartLauncher(Launcher):
    """Starts the worker program only after *delay* seconds (one process throughout)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    def command(self, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", pfuncs.SLOW_START, str(self.delay), *argv]


@pytest.mark.anyio
async def test_closing_the_pool_ends_a_call_that_is_starting_its_worker() -> None:
    guard = funcs.LeakGuard()
    outcome: list[BaseException] = []
    results: list[object] = []
    with anyio.fail_after(20):  # the start alone would take 60 s
        async with (
            anyio.create_task_group() as tg,
            WorkerPool(max_workers=1, launcher=SlowStartLauncher(60)) as pool,
        ):

            async def call() -> None:
                try:
                    results.append(await pool.run_sync(funcs.echo, 1))
                except Exception as exc:
                    outcome.append(exc)

            tg.start_soon(call)
            with anyio.fail_after(10):
                while not funcs.child_pids() - guard.children:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
    assert results == []
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError)
    assert "closed while the call started its worker" in str(outcome[0])
    assert pool.statistics().workers == 0
    guard.check()


@pytest.mark.anyio
async def test_closing_the_pool_ends_a_call_whose_worker_runs_the_initializer(
    tmp_path: Path,
) -> None:
    guard = funcs.LeakGuard()
    started = tmp_path / "initializer-started"
    outcome: list[BaseException] = []
    with anyio.fail_after(20):
        async with (
            anyio.create_task_group() as tg,
            WorkerPool(
                max_workers=1,
                initializer=pfuncs.announce_then_sleep,
                initargs=(str(started), 60),
            ) as pool,
        ):

            async def call() -> None:
                try:
                    await pool.run_sync(funcs.echo, 1)
                except Exception as exc:
                    outcome.append(exc)

            tg.start_soon(call)
            await _wait_for(started)
    assert len(outcome) == 1
    assert isinstance(outcome[0], anyio.ClosedResourceError)
    guard.check()


@pytest.mark.anyio
async def test_several_tasks_closing_the_pool_during_a_start_all_return() -> None:
    guard = funcs.LeakGuard()
    outcome: list[BaseException] = []
    with anyio.fail_after(20):
        async with (
            anyio.create_task_group() as tg,
            WorkerPool(max_workers=2, launcher=SlowStartLauncher(60)) as pool,
        ):

            async def call() -> None:
                try:
                    await pool.run_sync(funcs.echo, 1)
                except Exception as exc:
                    outcome.append(exc)

            tg.start_soon(call)
            tg.start_soon(call)
            with anyio.fail_after(10):
                while len(funcs.child_pids() - guard.children) < 2:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
            async with anyio.create_task_group() as closers:
                for _ in range(3):
                    closers.start_soon(pool.aclose)
            assert not funcs.child_pids() - guard.children
    assert len(outcome) == 2
    assert all(isinstance(exc, anyio.ClosedResourceError) for exc in outcome)
    guard.check()


# -- 17. aclose() from another task -------------------------------------------------------


@pytest.mark.anyio
async def test_aclose_from_another_task_ends_running_calls_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    guard = funcs.LeakGuard()
    outcomes: list[BaseException] = []
    with anyio.fail_after(30):
        async with WorkerPool(max_workers=2) as pool:
            async with anyio.create_task_group() as tg:

                async def long_call(path: Path) -> None:
                    try:
                        await pool.run_sync(pfuncs.announce_then_sleep, str(path), 60)
                    except Exception as exc:
                        outcomes.append(exc)

                for name in ("a", "b"):
                    tg.start_soon(long_call, tmp_path / name)
                for name in ("a", "b"):
                    await _wait_for(tmp_path / name)
                pids = {int((tmp_path / name).read_text()) for name in ("a", "b")}
                tg.start_soon(pool.aclose)
            # Every worker is reaped once the other task's aclose() returned.
            assert not pids & funcs.child_pids()
            assert pool.statistics().workers == 0
            with pytest.raises(anyio.ClosedResourceError):
                await pool.run_sync(funcs.echo, 1)
            # The block itself goes on: the pool did not cancel its owner.
            await anyio.lowlevel.checkpoint()
    assert len(outcomes) == 2
    for exc in outcomes:
        assert isinstance(exc, BrokenWorkerProcess)
        assert "pool was closed" in str(exc)
    guard.check()


@pytest.mark.anyio
async def test_aclose_from_another_task_with_idle_workers() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=2, prestart=2) as pool:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.aclose)
        assert funcs.child_pids() == guard.children
        with pytest.raises(anyio.ClosedResourceError, match="closed"):
            await pool.run_sync(funcs.echo, 1)
    guard.check()


@pytest.mark.anyio
async def test_aclose_inside_a_nested_cancel_scope_of_the_owning_task() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.sleep_and_pid, 0)
        with anyio.move_on_after(30):
            await pool.aclose()
        assert pid not in funcs.child_pids()
        with pytest.raises(anyio.ClosedResourceError):
            await pool.run_sync(funcs.echo, 1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.aclose)  # closing again, from anywhere, is harmless
    guard.check()


# -- 4. the default pool comes back ------------------------------------------------------


@pytest.mark.anyio
async def test_a_new_default_pool_replaces_one_whose_host_task_ended(
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    first = await to_process.run_sync(funcs.sleep_and_pid, 0)
    if anyio_backend[0] == "asyncio":
        import asyncio

        # As a shutdown handler that cancels every other task does.
        hosts = [
            task
            for task in asyncio.all_tasks()
            if getattr(task.get_coro(), "__qualname__", "") == "_guarded"
        ]
        assert hosts
        for task in hosts:
            task.cancel()
        with anyio.fail_after(10):
            while not all(task.done() for task in hosts):  # noqa: ASYNC110
                await anyio.sleep(0.01)
    else:
        # Trio cancels its system tasks only when the run ends; the host ends when its
        # pool is closed.
        pool, _ = to_process._default_pool.get()
        await pool.aclose()
        await anyio.lowlevel.checkpoint()
    assert first not in funcs.child_pids()
    second = await to_process.run_sync(funcs.sleep_and_pid, 0)
    assert second != first
    assert await to_process.run_sync(funcs.sleep_and_pid, 0) == second


# -- 9. Trio as a guest on asyncio ------------------------------------------------------

GUEST = """
import asyncio
import trio
from procio_workers import to_process
import procio_workers_testfuncs as funcs

async def trio_main():
    return await to_process.run_sync(funcs.sleep_and_pid, 0)

async def host_main():
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    trio.lowlevel.start_guest_run(
        trio_main,
        run_sync_soon_threadsafe=loop.call_soon_threadsafe,
        done_callback=done.set_result,
    )
    pid = (await done).unwrap()
    # The Trio run has ended; the asyncio loop goes on.
    print(pid, pid in funcs.child_pids())

asyncio.run(host_main())
"""


def test_trio_as_a_guest_on_asyncio_takes_its_workers_when_its_run_ends(tmp_path: Path) -> None:
    out = run_script(tmp_path, GUEST)[0].split()
    assert out[0] != str(os.getpid())
    assert out[1] == "False", "the worker outlived the Trio run that used it"


# -- 12. nothing escaping the default pool's host vanishes -------------------------------


def test_a_failure_of_the_default_pools_host_is_logged(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    class FailingPool(WorkerPool):
        async def __aenter__(self) -> FailingPool:
            raise OSError("no room for a pool")

    monkeypatch.setattr(to_process, "WorkerPool", FailingPool)
    monkeypatch.setattr(to_process, "_last_used", None)

    async def main() -> None:
        with pytest.raises(RuntimeError):
            await to_process.run_sync(funcs.echo, 1)

    with caplog.at_level(logging.ERROR, logger="procio.workers"):
        anyio.run(main, backend=anyio_backend[0], backend_options=anyio_backend[1])
    records = [r for r in caplog.records if r.name == "procio.workers"]
    assert records, "the host task's failure vanished"
    assert records[0].exc_info is not None
    assert "no room for a pool" in str(records[0].exc_info[1])


# -- 13. retries, the message of a pool's kill, the figures ------------------------------


class _InProcessWorker(Worker):
    """Runs calls in this process, unless it died while idle unseen (as a process can)."""

    def __init__(self) -> None:
        self.killed = False
        self.died_unseen = False
        self.calls = 0

    @property
    def alive(self) -> bool:
        # A death while idle is found only when the next call is sent.
        return not self.killed

    async def call(self, request: Any) -> object:
        self.calls += 1
        if self.died_unseen:
            broken = BrokenWorkerProcess("the worker had exited while idle")
            broken.started = False
            raise broken
        func, args = request
        return func(*args)

    def kill(self) -> None:
        self.killed = True

    async def aclose(self) -> None:
        self.killed = True


class _InProcessBackend(WorkerBackend):
    def __init__(self) -> None:
        self.workers: list[_InProcessWorker] = []

    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        worker = _InProcessWorker()
        self.workers.append(worker)
        return worker


@pytest.mark.anyio
async def test_a_call_retries_while_its_worker_had_died_before_it_arrived() -> None:
    backend = _InProcessBackend()
    async with WorkerPool(max_workers=3, prestart=3, backend=backend) as pool:
        for worker in backend.workers:
            worker.died_unseen = True
        assert await pool.run_sync(funcs.echo, "arrived") == "arrived"
        figures = pool.statistics()
    assert [w.calls for w in backend.workers[:3]] == [1, 1, 1]
    # None of them was running a call when it died: "broken" counts those only.
    assert (figures.calls, figures.failures, figures.broken) == (1, 0, 0)


@pytest.mark.anyio
async def test_bad_arguments_and_a_failing_initializer_count_as_failed_calls() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with pytest.raises(SerializationError):
            await pool.run_sync(funcs.echo, lambda: None)
        assert (pool.statistics().calls, pool.statistics().failures) == (1, 1)
    async with WorkerPool(max_workers=1, initializer=pfuncs.failing_initializer) as pool:
        with pytest.raises(BrokenWorkerProcess, match="initializer says no"):
            await pool.run_sync(funcs.echo, 1)
        figures = pool.statistics()
        assert (figures.calls, figures.failures, figures.workers) == (1, 1, 0)


@pytest.mark.anyio
async def test_a_prestart_that_fails_raises_the_reason_and_leaves_nothing() -> None:
    guard = funcs.LeakGuard()
    with pytest.raises(BrokenWorkerProcess, match="initializer says no"):
        async with WorkerPool(max_workers=2, prestart=2, initializer=pfuncs.failing_initializer):
            pytest.fail("the pool opened although no worker could start")
    guard.check()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"initializer": 0}, TypeError, "initializer"),
        ({"initializer": "print"}, TypeError, "initializer"),
        ({"initargs": [1]}, TypeError, "initargs"),
        ({"max_workers": 0}, ValueError, "max_workers"),
        ({"max_workers": -3}, ValueError, "max_workers"),
        ({"max_workers": 2.5}, TypeError, "max_workers"),
        ({"max_workers": "4"}, TypeError, "max_workers"),
        ({"max_workers": True}, TypeError, "max_workers"),
        ({"max_tasks_per_worker": 0}, ValueError, "max_tasks_per_worker"),
        ({"max_tasks_per_worker": 1.0}, TypeError, "max_tasks_per_worker"),
        ({"idle_timeout": -1}, ValueError, "idle_timeout"),
        ({"idle_timeout": float("nan")}, ValueError, "idle_timeout"),
        ({"idle_timeout": "60"}, TypeError, "idle_timeout"),
        ({"prestart": -1}, ValueError, "prestart"),
        ({"prestart": None}, TypeError, "prestart"),
        ({"serializer": "no-such-serializer"}, ValueError, "no-such-serializer"),
        ({"serializer": 3}, TypeError, "Serializer"),
        ({"launcher": "no-such-launcher"}, ValueError, "no-such-launcher"),
        ({"output": "stdout"}, TypeError, "output"),
        ({"python": 3}, TypeError, "python"),
        ({"max_frame_length": 0}, ValueError, "max_frame_length"),
        ({"backend": object()}, TypeError, "backend"),
    ],
)
def test_bad_arguments_are_refused_when_the_pool_is_made(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        WorkerPool(**kwargs)


def test_good_arguments_are_accepted() -> None:
    pool = WorkerPool(2, idle_timeout=0, initializer=print, initargs=(), prestart=0)
    assert pool.max_workers == 2
    assert pool.idle_timeout == 0.0
    assert WorkerPool(idle_timeout=None, max_tasks_per_worker=None).idle_timeout is None
