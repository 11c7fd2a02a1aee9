"""Load on the worker layer: thousands of calls, cancelled and broken at random.

Many tasks share one pool. Each call is drawn from a seeded generator: most echo a
random value, some raise, a few kill or end their worker, and many run under a random
cancellation deadline (shielded or ``cancellable=True``). Every call must end with the
right result, its own exception, ``BrokenWorkerProcess`` (only the calls that break their
worker) or the cancellation; the pool's figures must add up; and once the pool is closed
no worker, zombie or descriptor may be left.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio import CancelScope, create_task_group, fail_after, move_on_after
from procio_workers import BrokenWorkerProcess, WorkerPool, to_process

from ._support import (
    LOAD_BACKENDS,
    LeakGuard,
    load_count,
    open_fds,
    replay_hint,
    rng_for,
    scaled,
    tally,
)

if TYPE_CHECKING:
    from tests.reliability import procio_reliability_funcs as funcs
else:
    import procio_reliability_funcs as funcs

pytestmark = pytest.mark.anyio

#: Calls per backend in CI (asyncio and Trio: twice this in all).
CALLS = 15000
TASKS = 32


@pytest.fixture(params=LOAD_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


def random_value(rng: random.Random) -> object:
    kind = rng.randrange(6)
    if kind == 0:
        return rng.randrange(-(2**70), 2**70)
    if kind == 1:
        return rng.randbytes(rng.choice([0, 10, 1000, 40_000]))  # 40 kB: out of band
    if kind == 2:
        return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(20)))
    if kind == 3:
        return {"n": rng.random(), "list": [rng.randrange(100) for _ in range(5)]}
    if kind == 4:
        return bytearray(rng.randbytes(rng.choice([5, 50_000])))
    return (None, True, 1.5, ("nested", b"x"))


async def one_call(pool: WorkerPool, rng: random.Random) -> str:
    """Make one random call; check its outcome exactly and name it."""
    roll = rng.random()
    if roll < 0.004:
        with pytest.raises(BrokenWorkerProcess):
            await pool.run_sync(funcs.exit_abruptly, 3)
        return "worker exited"
    if roll < 0.008:
        with pytest.raises(BrokenWorkerProcess):
            await pool.run_sync(funcs.kill_self)
        return "worker killed"
    if roll < 0.05:
        with pytest.raises(ValueError, match="expected failure"):
            await pool.run_sync(funcs.boom, "expected failure")
        return "raised"
    value = random_value(rng)
    if roll < 0.35:
        # A deadline that may expire before, during or after the call.
        cancellable = rng.random() < 0.05  # killing the worker is costly: keep it rare
        with move_on_after(rng.uniform(0, 0.003)) as scope:
            result = await pool.run_sync(funcs.echo, value, cancellable=cancellable)
        if scope.cancelled_caught:
            return "cancelled, worker killed" if cancellable else "cancelled"
        assert result == value
        return "completed"
    assert await pool.run_sync(funcs.echo, value) == value
    return "completed"


async def test_thousands_of_calls_with_random_cancellation_and_breakage(
    anyio_backend: Any, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    count = load_count("calls", CALLS)
    seeds = [rng.randrange(2**32) for _ in range(count)]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    async def runner(pool: WorkerPool, indices: range) -> None:
        for index in indices:
            try:
                outcomes[await one_call(pool, random.Random(seeds[index]))] += 1
            except Exception as exc:  # collected, so one report names them all
                failures.append(f"call {index} (seed {seeds[index]}): {exc!r}")

    with fail_after(50 * max(1.0, count / CALLS)):  # a stuck call fails the test
        async with WorkerPool(max_workers=4) as pool:
            async with create_task_group() as tg:
                for task in range(TASKS):
                    tg.start_soon(runner, pool, range(task, count, TASKS))
            figures = pool.statistics()
            assert figures.busy == 0
            assert await pool.run_sync(funcs.echo, "after the storm") == "after the storm"

    assert not failures, f"{len(failures)} calls failed: {failures[:5]}; {replay_hint()}"
    assert sum(outcomes.values()) == count
    breaking = outcomes["worker exited"] + outcomes["worker killed"]
    assert figures.broken >= breaking, f"{figures}, {outcomes}; {replay_hint()}"
    guard.check()
    tally("worker calls", count)
    tally("worker calls cancelled", outcomes["cancelled"] + outcomes["cancelled, worker killed"])
    tally("workers killed or exited mid-call", breaking + outcomes["cancelled, worker killed"])
    tally("workers started", figures.started)


async def test_workers_retired_while_calls_arrive_lose_no_call(
    anyio_backend: Any, request: pytest.FixtureRequest
) -> None:
    """Constant churn: workers expire after 2 ms idle or 10 calls while calls keep coming,
    so retiring a worker races with handing it a call."""
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    count = scaled(600)
    seeds = [rng.randrange(2**32) for _ in range(count)]
    failures: list[str] = []
    done = 0

    async def runner(pool: WorkerPool, indices: range) -> None:
        nonlocal done
        for index in indices:
            local = random.Random(seeds[index])
            value = random_value(local)
            try:
                assert await pool.run_sync(funcs.echo, value) == value
                done += 1
            except Exception as exc:
                failures.append(f"call {index} (seed {seeds[index]}): {exc!r}")
            await anyio.sleep(local.choice([0, 0, 0.001, 0.003]))

    with fail_after(50 * max(1.0, count / 600)):
        async with WorkerPool(max_workers=3, idle_timeout=0.002, max_tasks_per_worker=10) as pool:
            async with create_task_group() as tg:
                for task in range(8):
                    tg.start_soon(runner, pool, range(task, count, 8))
            figures = pool.statistics()
    assert not failures, f"{len(failures)} calls failed: {failures[:5]}; {replay_hint()}"
    assert done == count
    assert figures.calls == count
    assert figures.failures == 0
    assert figures.started >= count // 10, figures
    guard.check()
    tally("worker calls", count)
    tally("workers retired while calls arrived", figures.started)


def test_to_process_calls_under_random_cancellation_leave_nothing_after_the_loop(
    anyio_backend: Any, request: pytest.FixtureRequest
) -> None:
    """The default pool of ``to_process``, as AnyIO code uses it, under the same storm."""
    backend, options = anyio_backend
    rng = rng_for(request.node.name)
    count = scaled(2000)
    seeds = [rng.randrange(2**32) for _ in range(count)]
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    async def runner(indices: range) -> None:
        for index in indices:
            local = random.Random(seeds[index])
            value = random_value(local)
            # Now and then a Popen option: a fresh worker, used once, never reused.
            options: dict[str, Any] = {"cwd": "/"} if local.random() < 0.01 else {}
            # Now and then a call whose cancellation kills its worker.
            cancellable = local.random() < 0.01
            try:
                with move_on_after(local.uniform(0, 0.004)) as scope:
                    result = await to_process.run_sync(
                        funcs.echo, value, cancellable=cancellable, **options
                    )
                if scope.cancelled_caught:
                    outcomes["cancelled"] += 1
                else:
                    assert result == value
                    outcomes["completed"] += 1
            except Exception as exc:
                failures.append(f"call {index} (seed {seeds[index]}): {exc!r}")

    async def main() -> None:
        with fail_after(40):
            # Warm workers first: a call cancelled while its worker starts abandons that
            # worker, so deadlines this short would otherwise never let one finish.
            async with create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(to_process.run_sync, funcs.echo, 0)
            async with create_task_group() as tg:
                for task in range(8):
                    tg.start_soon(runner, range(task, count, 8))
            with CancelScope(shield=True):
                assert await to_process.run_sync(funcs.echo, 1) == 1

    anyio.run(anyio.sleep, 0, backend=backend, backend_options=options)  # uvloop's own pipe
    fds_before = open_fds()
    guard = LeakGuard(request.node.name)
    anyio.run(main, backend=backend, backend_options=options)
    assert not failures, f"{len(failures)} calls failed: {failures[:5]}; {replay_hint()}"
    assert sum(outcomes.values()) == count
    assert outcomes["completed"] > 0, f"{outcomes}; {replay_hint()}"
    assert outcomes["cancelled"] > 0, f"{outcomes}; {replay_hint()}"
    guard.check()
    assert open_fds() == fds_before
    tally("worker calls", count)
    tally("worker calls cancelled", outcomes["cancelled"])
