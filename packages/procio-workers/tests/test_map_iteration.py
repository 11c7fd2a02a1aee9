"""One results object, one waiting task: a second one is refused, not fed half the results."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import WorkerPool

if TYPE_CHECKING:
    from tests.procio_workers_testfuncs import sleep_and_pid
else:
    from procio_workers_testfuncs import sleep_and_pid

pytestmark = pytest.mark.anyio


async def test_a_second_task_waiting_on_the_same_results_is_refused() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(30):
            async with pool.map(sleep_and_pid, [0.5, 0.0], chunksize=1) as results:
                first: list[int] = []
                waiting = anyio.Event()

                async def take_one() -> None:
                    waiting.set()
                    first.append(await results.__anext__())

                async with anyio.create_task_group() as tg:
                    tg.start_soon(take_one)
                    await waiting.wait()
                    await anyio.sleep(0.05)  # take_one now waits for the first chunk
                    with pytest.raises(anyio.BusyResourceError):
                        await results.__anext__()
                # The refused task took nothing: both results are still there, in order.
                rest = [pid async for pid in results]
                assert len(first) == 1
                assert len(rest) == 1
