"""A stream takes a quick generator's items several at a time, in one tight loop.

Whatever the number of items, a generator that ends or raises at any position must
give every item before that position, exactly once and in order, and no more: these
positions straddle the sizes of what a worker holds and sends at once (256 items).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import StreamResults, WorkerPool

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

pytestmark = pytest.mark.anyio

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45
COUNTS = [0, 1, 2, 255, 256, 257, 511, 512, 513, 5000, 65_537]


@pytest.fixture
async def pool() -> AsyncIterator[WorkerPool]:
    async with WorkerPool(max_workers=1) as opened:
        yield opened


async def collect(results: StreamResults[int], into: list[int]) -> None:
    async with results:
        async for item in results:
            into.append(item)


@pytest.mark.parametrize("count", COUNTS)
async def test_every_item_comes_once_in_order(pool: WorkerPool, count: int) -> None:
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD):
        await collect(pool.stream(mfuncs.count_up, count), got)
    assert got == list(range(count))


@pytest.mark.parametrize("count", COUNTS)
async def test_an_error_comes_after_exactly_the_items_before_it(
    pool: WorkerPool, count: int
) -> None:
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD), pytest.raises(ValueError, match=f"after {count} items"):
        await collect(pool.stream(mfuncs.raise_after, count), got)
    assert got == list(range(count))
    # The worker is still in service, and nothing of the stream is left in its pipe.
    assert await pool.run_sync(len, "after") == 5
    assert pool.statistics().broken == 0


async def test_a_stream_left_early_stops_its_generator(pool: WorkerPool) -> None:
    with anyio.fail_after(HANG_GUARD):
        async with pool.stream(mfuncs.count_up, 10**9) as items:
            got = []
            async for item in items:
                got.append(item)
                if len(got) == 3000:
                    break
        assert got == list(range(3000))
        # Held back by the parent's credit, not run to its end: the worker answers now.
        assert await pool.run_sync(len, "after") == 5
