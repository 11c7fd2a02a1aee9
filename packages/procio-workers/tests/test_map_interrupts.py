"""A Ctrl-C on Trio while a lane waits for an answer with a chunk queued behind it.

On Trio a SIGINT becomes a KeyboardInterrupt in whatever task runs when it comes, a
lane's as well. A lane that has a chunk queued behind the running one first waits for
the running one's answer to begin; interrupted there, that answer (and the queued
chunk's) is still on its way, and the worker must not go back to the pool: the next
map or call would read it as its own.
"""

from __future__ import annotations

from contextlib import suppress
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import WorkerPool
from procio_workers._process_backend import ProcessWorker

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

pytestmark = pytest.mark.anyio

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45


# Trio only: on asyncio the runner turns a Ctrl-C into a cancellation of the main task.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_an_interrupt_while_waiting_for_an_answer_leaves_none_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = ProcessWorker.wait_for_answer
    interrupts: list[int | None] = []

    async def interrupted(self: ProcessWorker) -> None:
        if not interrupts:
            interrupts.append(self.pid)
            raise KeyboardInterrupt
        await real(self)

    monkeypatch.setattr(ProcessWorker, "wait_for_answer", interrupted)
    items = [(0.2, f"old {i}") for i in range(6)]
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            with suppress(KeyboardInterrupt):
                async with pool.map(mfuncs.sleep_then_echo, items, chunksize=1) as results:
                    async for _ in results:
                        pass
            assert interrupts, "the interrupt was never raised"
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(5))]
            assert got == [1, 4, 7, 10, 13]
            assert await pool.run_sync(len, "after") == 5
        # The interrupted worker is gone (killed), not back in the pool.
        pids = {slot.worker.pid for slot in pool._slots}
        assert interrupts[0] not in pids
        assert pool.statistics().busy == 0


# Trio only, as above.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_an_interrupt_as_a_chunk_is_queued_leaves_no_answer_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Ctrl-C sent by the very item whose chunk is being queued lands right after the
    # frame went out: before the worker's state or the lane counted that chunk. Its
    # answer is then on its way, and nobody knows it: the worker must not be reused.
    real = ProcessWorker.queue_batch
    interrupts: list[int | None] = []

    def interrupted(self: ProcessWorker, request: object) -> None:
        real(self, request)
        if not interrupts:
            interrupts.append(self.pid)
            self._queued -= 1  # as if it landed before the worker counted the batch
            raise KeyboardInterrupt

    monkeypatch.setattr(ProcessWorker, "queue_batch", interrupted)
    items = [(0.2, f"old {i}") for i in range(6)]
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            with suppress(KeyboardInterrupt):
                async with pool.map(mfuncs.sleep_then_echo, items, chunksize=1) as results:
                    async for _ in results:
                        pass
            assert interrupts, "the interrupt was never raised"
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(5))]
            assert got == [1, 4, 7, 10, 13]
            assert [i async for i in pool.stream(mfuncs.count_up, 4)] == [0, 1, 2, 3]
            assert await pool.run_sync(len, "after") == 5
        assert interrupts[0] not in {slot.worker.pid for slot in pool._slots}
