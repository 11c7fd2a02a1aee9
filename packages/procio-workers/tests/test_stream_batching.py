"""WorkerPool.stream carries many items per frame from a quick generator, none held back
from a slow one."""

from __future__ import annotations

from pathlib import Path
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

HANG_GUARD = 45


async def test_a_quick_generator_sends_many_items_per_frame(
    pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One ITEMS frame per item (or a few) costs a round of the event loop per item.
    frames: list[int] = []
    real = ProcessWorker._load_items

    def counted(self: ProcessWorker, frame: object) -> list[object]:
        items = real(self, frame)  # type: ignore[arg-type]
        frames.append(len(items))
        return items

    monkeypatch.setattr(ProcessWorker, "_load_items", counted)
    with anyio.fail_after(HANG_GUARD):
        got = [item async for item in pool.stream(mfuncs.count_up, 100_000)]
    assert got == list(range(100_000))
    assert sum(frames) == 100_000
    assert len(frames) < 1000, f"{len(frames)} frames for 100,000 quick items"


async def test_an_item_that_took_long_is_not_held_back_after_a_burst(
    pool: WorkerPool, tmp_path: Path
) -> None:
    # A burst of quick items (frames grow), then one item 50 ms later, then the
    # generator blocks until the parent has that item: it must arrive on its own, not
    # wait for company that only its delivery lets come.
    go = tmp_path / "go"
    got: list[object] = []
    with anyio.fail_after(HANG_GUARD):
        async with pool.stream(mfuncs.burst_then_late_then_wait, 20_000, str(go), 30.0) as items:
            async for item in items:
                got.append(item)
                if item == "late":
                    go.touch()
    assert got == [*range(20_000), "late", "after"]


@pytest.mark.parametrize("burst", [0, 1, 5000])
async def test_a_single_item_comes_before_the_generator_blocks_for_the_next(
    pool: WorkerPool, tmp_path: Path, burst: int
) -> None:
    # After *burst* quick items read in full, the generator yields one item and blocks
    # until that item has reached the parent.
    go = tmp_path / "go"
    with anyio.fail_after(HANG_GUARD):
        async with pool.stream(mfuncs.burst_then_late_then_wait, burst, str(go), 30.0) as items:
            assert [await items.__anext__() for _ in range(burst)] == list(range(burst))
            assert await items.__anext__() == "late"
            go.touch()
            assert await items.__anext__() == "after"
            with pytest.raises(StopAsyncIteration):
                await items.__anext__()
