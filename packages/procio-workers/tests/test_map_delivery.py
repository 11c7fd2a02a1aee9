"""How results at hand reach the caller: no suspension per item, a checkpoint per chunk.

The results of a chunk are handed out of a local buffer by ``__anext__`` without a
trip through the event loop; the caller's iteration suspends (and may be cancelled)
only when that buffer is empty and the next chunk is awaited.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from anyio.lowlevel import checkpoint
from procio_workers import WorkerPool

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

pytestmark = pytest.mark.anyio

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45
CHUNK = 700


async def test_other_tasks_run_only_between_chunks() -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await checkpoint()

    seen: list[int] = []
    values: list[int] = []
    async with WorkerPool(max_workers=2) as pool, anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(
                mfuncs.triple_plus_one, range(5 * CHUNK), chunksize=CHUNK, ordered=False
            ) as results:
                async for value in results:
                    values.append(value)
                    seen.append(ticks)
        tg.cancel_scope.cancel()
    assert sorted(values) == [3 * x + 1 for x in range(5 * CHUNK)]
    moved = [i for i in range(1, len(seen)) if seen[i] != seen[i - 1]]
    # The ticker ran while the caller took the next chunk (unordered: one at a time),
    # and never while it went through one. (Trio may run the ticker after the caller
    # in a batch: it is then seen at a later chunk, not at every one.)
    assert moved
    assert set(moved) <= {CHUNK, 2 * CHUNK, 3 * CHUNK, 4 * CHUNK}, moved


async def test_a_cancellation_lands_at_the_next_chunk() -> None:
    values: list[int] = []
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            with anyio.CancelScope() as scope:
                results = pool.map(mfuncs.triple_plus_one, range(3 * CHUNK), chunksize=CHUNK)
                async with results:
                    async for value in results:
                        values.append(value)
                        if len(values) == 10:
                            scope.cancel()
            assert scope.cancelled_caught
        # Cancelled within the first chunk: its results at hand were all handed out,
        # nothing of a later chunk was.
        assert values == [3 * x + 1 for x in range(CHUNK)]
        assert await pool.run_sync(len, "after") == 5
