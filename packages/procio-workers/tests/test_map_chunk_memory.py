"""Automatic chunk sizes: a function mapped before in a pool starts where it left off.

The first map of a function starts at chunks of 1 and grows them from measured chunk
times. A later map of the same function over an input with a length starts at the
size that the last measurement gives (still capped by the length), instead of going
through that growth again: its first two chunks alone are a third and two thirds of
that size, when the size holds enough work; an input without a length still starts at
1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import WorkerPool
from procio_workers import _mapping as mapping_module
from procio_workers._mapping import (
    MAX_AUTO_CHUNK,
    RAMP_MIN_SECONDS,
    RAMP_SHARES,
    TARGET_CHUNK_SECONDS,
)

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

pytestmark = pytest.mark.anyio

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45
ENDLESS = range(10**7)  # its cap (a length over 2 chunks per worker) never binds here


class Unhashable:
    """A callable that no dict can hold as a key."""

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Unhashable)

    def __call__(self, x: int) -> int:
        return x * 2


def size_for(per_item: float) -> int:
    return max(1, min(MAX_AUTO_CHUNK, int(TARGET_CHUNK_SECONDS / per_item)))


def first_size_for(per_item: float) -> int:
    """The first chunk of a map that starts at the size *per_item* gives (no length cap)."""
    size = size_for(per_item)
    if size * per_item >= RAMP_MIN_SECONDS:
        size = math.ceil(size * RAMP_SHARES[0])
    return size


@pytest.fixture
def chunk_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of the chunks that maps take from their inputs, in the order taken."""
    sizes: list[int] = []
    number = mapping_module._MapCore._number

    def counted(core: Any, items: list[Any]) -> Any:
        if items:
            sizes.append(len(items))
        return number(core, items)

    monkeypatch.setattr(mapping_module._MapCore, "_number", counted)
    return sizes


async def take(pool: WorkerPool, count: int) -> list[int]:
    got: list[int] = []
    async with pool.map(mfuncs.triple_plus_one, ENDLESS) as results:
        async for value in results:
            got.append(value)
            if len(got) == count:
                break
    return got


async def test_a_second_map_starts_at_the_measured_size() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            assert await take(pool, 3000) == [3 * x + 1 for x in range(3000)]
            per_item = pool._per_item_estimate(mfuncs.triple_plus_one)
            assert per_item is not None
            async with pool.map(mfuncs.triple_plus_one, ENDLESS) as results:
                assert results.chunksize == first_size_for(per_item)
                # and it goes on from there, with the results in order
                got = []
                async for value in results:
                    got.append(value)
                    if len(got) == 500:
                        break
            assert got == [3 * x + 1 for x in range(500)]


async def test_the_length_still_caps_a_remembered_size() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await take(pool, 3000)
            async with pool.map(mfuncs.triple_plus_one, list(range(40))) as results:
                sizes = {results.chunksize}
                got = []
                async for value in results:
                    got.append(value)
                    sizes.add(results.chunksize)
    assert got == [3 * x + 1 for x in range(40)]
    # The size remembered from 3,000 items is far larger; 40 items on 2 workers cap it
    # at 40 / (2 * 2) = 10.
    assert max(sizes) <= 10, sorted(sizes)


async def test_what_starts_at_one_still() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await take(pool, 3000)
            assert pool._per_item_estimate(mfuncs.triple_plus_one) is not None
            # An input without a length: nothing caps the size, so no estimate is used.
            items = (x for x in range(100))
            async with pool.map(mfuncs.triple_plus_one, items) as results:
                assert results.chunksize == 1
                assert [y async for y in results] == [3 * x + 1 for x in range(100)]
            # Another function.
            async with pool.map(mfuncs.pid_of, ENDLESS) as results:
                assert results.chunksize == 1
            # An explicit chunk size.
            async with pool.map(mfuncs.triple_plus_one, ENDLESS, chunksize=3) as results:
                assert results.chunksize == 3
    # Another pool.
    async with WorkerPool(max_workers=2) as other:
        assert other._per_item_estimate(mfuncs.triple_plus_one) is None
        results = other.map(mfuncs.triple_plus_one, ENDLESS)
        assert results.chunksize == 1
        await results.aclose()


async def test_a_function_that_cannot_be_remembered_is_not() -> None:
    func = Unhashable()
    async with WorkerPool(max_workers=1) as pool:
        pool._keep_per_item_estimate(func, 1e-6)  # no TypeError out of it
        assert pool._per_item_estimate(func) is None
        async with pool.map(func, ENDLESS) as results:
            assert results.chunksize == 1


async def map_remembered(
    items: list[int], per_item: float, lanes: int | None = None
) -> tuple[int, int]:
    """Map ``triple_plus_one`` over *items* in a new pool of 2 workers that remembers
    *per_item* seconds an item (and *lanes*, if given) for it, and check the results.

    Returns the size the map announced for its first chunk, and the lanes it ran.
    """
    func = mfuncs.triple_plus_one
    async with WorkerPool(max_workers=2) as pool:
        pool._keep_per_item_estimate(func, per_item)
        if lanes is not None:
            pool._keep_lanes_estimate(func, lanes)
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(func, items) as results:
                first, running = results.chunksize, results.running_lanes
                got = [y async for y in results]
    assert got == [3 * x + 1 for x in items]
    return first, running


async def test_the_first_chunks_ramp_up_to_a_remembered_size(chunk_sizes: list[int]) -> None:
    # 1 µs an item: 10,000 items a chunk (10 ms of work, far above RAMP_MIN_SECONDS),
    # under the cap of 90,000 / (2 * 2). The first chunk is a third of that, so the
    # first results come after a third of the wait; the second two thirds.
    items = list(range(90_000))
    first, _ = await map_remembered(items, 1e-6)
    assert first == math.ceil(10_000 * RAMP_SHARES[0])
    assert chunk_sizes[:2] == [3334, 6667]
    assert sum(chunk_sizes) == len(items)


async def test_chunks_of_little_work_do_not_ramp(chunk_sizes: list[int]) -> None:
    # 10 ns an item: 10,000 items hold 0.1 ms of work, less than two more chunks cost.
    await map_remembered(list(range(90_000)), 1e-8)
    assert chunk_sizes[:2] == [10_000, 10_000]


async def test_a_map_on_fewer_lanes_cuts_its_input_for_the_lanes_it_runs(
    chunk_sizes: list[int], no_cpu_waits: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One lane runs of two: two chunks for it and one for the lane it may start, so
    # 120 items go in chunks of 40 (not 30: two for each of both lanes).
    # The machine's real waits for a CPU are hidden: on a busy machine they would
    # rightly start the second lane at the first answer, and the chunks cut after it
    # would count two lanes. So are the chunks' measured times: the third chunk is cut
    # after the first answer, and a first chunk slowed down (the worker's first import
    # of the function's module, on a busy machine) would rightly cut it smaller than
    # the cap that this test is about.
    monkeypatch.setattr(mapping_module._MapCore, "_measured", lambda *_: None)
    _, running = await map_remembered(list(range(120)), 1e-9, lanes=1)
    assert running == 1
    assert chunk_sizes == [40, 40, 40]
