"""Maps and streams broken off at random points: by cancellation, by break, either shape.

After every interruption no worker of the pool is left busy (at once when the
``async with`` block was left, soon after when a plain ``async for`` was), a worker that
was not cancellable went back to the pool instead of being replaced, and the next map or
stream on the same pool gets exactly its own results. Once the pool is closed nothing is
left: no child, no zombie, no open descriptor. The random points come from the session
seed (see the header of the run) and can be replayed.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import WorkerPool

from ._support import LeakGuard, replay_hint, rng_for, scaled, tally

if TYPE_CHECKING:
    from tests.reliability import procio_map_fault_funcs as funcs
else:
    import procio_map_fault_funcs as funcs

pytestmark = pytest.mark.anyio

MAX_WORKERS = 2


async def wait_until_idle(pool: WorkerPool, hint: str) -> None:
    with anyio.move_on_after(10):
        while pool.statistics().busy:  # noqa: ASYNC110 - the pool has no event for this
            await anyio.sleep(0.005)
    assert pool.statistics().busy == 0, f"a worker stayed busy; {hint}"


async def check_next_map(pool: WorkerPool, rng: random.Random, hint: str) -> None:
    values = [rng.randrange(10**6) for _ in range(rng.randrange(0, 60))]
    chunksize = rng.choice([1, 4, None])
    items = [(0.0, v) for v in values]
    got = [y async for y in pool.map(funcs.sleep_then_echo, items, chunksize=chunksize)]
    assert got == values, hint


async def test_maps_interrupted_at_random_points_leave_no_busy_worker(
    anyio_backend: object, tmp_path: Path
) -> None:
    rng = rng_for(f"map-interrupts:{anyio_backend}")
    guard = LeakGuard("maps interrupted at random points")
    async with WorkerPool(max_workers=MAX_WORKERS, prestart=MAX_WORKERS) as pool:
        for round_ in range(scaled(20)):
            delay = rng.uniform(0.0, 0.25)
            stop_after = rng.randrange(0, 30)
            how = rng.choice(["cancel", "break"])
            shape = rng.choice(["async with", "plain"])
            cancellable = rng.random() < 0.4
            ordered = rng.random() < 0.7
            chunksize = rng.choice([1, 3, None])
            folder = tmp_path / f"round{round_}"
            folder.mkdir()
            items = [(str(folder), rng.choice([0.0, 0.002, 0.02]), i) for i in range(60)]
            hint = (
                f"round {round_}: {how} after {delay:.3f} s / {stop_after} results, {shape}, "
                f"cancellable={cancellable}, ordered={ordered}, chunksize={chunksize}; "
                f"{replay_hint()}"
            )
            started_before = pool.statistics().started
            # A cancellable round before this one may have left fewer workers than
            # MAX_WORKERS: starting the missing ones is not replacing one.
            missing = MAX_WORKERS - pool.statistics().workers
            got: list[int] = []
            with anyio.fail_after(30):
                with anyio.move_on_after(delay if how == "cancel" else 60):
                    results = pool.map(
                        funcs.recorded_sleep_then_echo,
                        items,
                        chunksize=chunksize,
                        ordered=ordered,
                        cancellable=cancellable,
                    )
                    if shape == "async with":
                        async with results:
                            async for y in results:
                                got.append(y)
                                if how == "break" and len(got) > stop_after:
                                    break
                        # Leaving the block waited for everything of the map.
                        assert pool.statistics().busy == 0, hint
                    else:
                        async for y in results:
                            got.append(y)
                            if how == "break" and len(got) > stop_after:
                                break
                del results
                await wait_until_idle(pool, hint)
            started = set(folder.iterdir())
            if ordered:
                assert got == list(range(len(got))), hint
            else:
                assert len(set(got)) == len(got), hint
                assert set(got) <= set(range(60)), hint
            figures = pool.statistics()
            assert figures.workers <= MAX_WORKERS, hint
            if not cancellable:
                new = figures.started - started_before
                assert new <= missing, f"a worker was replaced; {hint}"
            with anyio.fail_after(30):
                await check_next_map(pool, rng, hint)
            assert set(folder.iterdir()) == started, f"items started after the map ended; {hint}"
            tally(f"map {how}")
    guard.check()


async def test_streams_broken_off_at_random_points_leave_no_busy_worker(
    anyio_backend: object,
) -> None:
    rng = rng_for(f"stream-interrupts:{anyio_backend}")
    guard = LeakGuard("streams broken off at random points")
    async with WorkerPool(max_workers=MAX_WORKERS, prestart=MAX_WORKERS) as pool:
        for round_ in range(scaled(20)):
            delay = rng.uniform(0.0, 0.2)
            stop_after = rng.randrange(0, 400)
            how = rng.choice(["cancel", "break"])
            shape = rng.choice(["async with", "plain"])
            cancellable = rng.random() < 0.4
            seconds = rng.choice([0.0, 0.0005, 0.005])
            hint = (
                f"round {round_}: {how} after {delay:.3f} s / {stop_after} items, {shape}, "
                f"cancellable={cancellable}, item time {seconds}; {replay_hint()}"
            )
            started_before = pool.statistics().started
            # A cancellable round before this one may have left fewer workers than
            # MAX_WORKERS: starting the missing ones is not replacing one.
            missing = MAX_WORKERS - pool.statistics().workers
            got: list[int] = []
            with anyio.fail_after(30):
                with anyio.move_on_after(delay if how == "cancel" else 60):
                    items = pool.stream(funcs.slow_count, 100_000, seconds, cancellable=cancellable)
                    if shape == "async with":
                        async with items:
                            async for item in items:
                                got.append(item)
                                if how == "break" and len(got) > stop_after:
                                    break
                        assert pool.statistics().busy == 0, hint
                    else:
                        async for item in items:
                            got.append(item)
                            if how == "break" and len(got) > stop_after:
                                break
                del items
                await wait_until_idle(pool, hint)
            assert got == list(range(len(got))), hint
            if not cancellable:
                new = pool.statistics().started - started_before
                assert new <= missing, f"worker replaced; {hint}"
            n = rng.randrange(0, 300)
            with anyio.fail_after(30):
                again = [i async for i in pool.stream(funcs.slow_count, n, 0.0)]
                assert again == list(range(n)), hint
                await check_next_map(pool, rng, hint)
            tally(f"stream {how}")
    guard.check()
