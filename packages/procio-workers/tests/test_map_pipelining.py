"""WorkerPool.map with a chunk queued behind the running one on each worker.

A lane sends its next chunk before the answer to the running one, so that the worker
goes on at once. These tests pin down what that must never change: a queued chunk that
the map no longer wants is dropped before it begins (or killed with the worker, with
``cancellable=True``), its results are never reported, a crash names an item of the
chunk that was running, and nothing of a queued chunk reaches the next call.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, MapResults, WorkerPool
from procio_workers._process_backend import ProcessBackend, ProcessWorker

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_map_testfuncs as mfuncs
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio

T = TypeVar("T")

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45


def names(folder: Path, prefix: str) -> set[int]:
    return {int(p.name.split(".")[1]) for p in folder.glob(f"{prefix}.*")}


async def collect_in_block(results: MapResults[T], into: list[T]) -> None:
    """Append every result to *into*, inside ``async with results``."""
    async with results:
        async for item in results:
            into.append(item)


async def wait_for(path: Path) -> None:
    while not await anyio.Path(path).exists():  # noqa: ASYNC110 - polls another process
        await anyio.sleep(0.005)


@pytest.mark.procio_leak_check
@pytest.mark.parametrize("cancellable", [False, True])
async def test_a_queued_chunk_never_runs_once_the_map_is_cancelled(
    tmp_path: Path, cancellable: bool
) -> None:
    # One worker, chunks of one item: item 0 runs (0.5 s) while item 1 waits queued in
    # the worker's pipe. Cancelled then, the map lets item 0 finish (or kills its
    # worker, cancellable) and item 1 never begins, then or later.
    items = [(str(tmp_path), i, 0.5) for i in range(6)]
    got: list[int] = []
    async with WorkerPool(max_workers=1, prestart=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            scope = anyio.CancelScope()
            with scope:
                results = pool.map(
                    mfuncs.slow_recorded, items, chunksize=1, cancellable=cancellable
                )

                async def cancel_while_queued() -> None:
                    await wait_for(tmp_path / "started.0")
                    # The second chunk went out behind the first: it is queued.
                    assert results.submitted == 2
                    scope.cancel()

                async with results, anyio.create_task_group() as tg:
                    tg.start_soon(cancel_while_queued)
                    async for y in results:
                        got.append(y)
            assert scope.cancelled_caught
            started = names(tmp_path, "started")
            finished = names(tmp_path, "finished")
            assert started == {0}
            assert finished == (set() if cancellable else {0})
            await anyio.sleep(1.2)
            assert names(tmp_path, "started") == {0}, "the queued chunk ran after all"
            assert got == [], "a result came out of a cancelled map"
            assert results.completed == 0
            assert pool.statistics().broken == 0
            # Nothing of either chunk is left for the next call to read.
            assert await pool.run_sync(funcs.echo, "next") == "next"
            assert [y async for y in pool.map(mfuncs.triple_plus_one, range(50))] == [
                3 * x + 1 for x in range(50)
            ]
        assert pool.statistics().started == (2 if cancellable else 1)


@pytest.mark.procio_leak_check
async def test_a_crash_with_a_chunk_queued_names_the_running_chunk() -> None:
    # Chunks of two on one worker: item 1 kills the worker while chunk (2, 3) is queued
    # behind it. The error names the running chunk's items, and nothing hangs.
    items = [(i, 1) for i in range(8)]
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            results = pool.map(mfuncs.kill_self_on, items, chunksize=2)
            with pytest.raises(BrokenWorkerProcess) as caught:
                await collect_in_block(results, [])
            notes = "\n".join(getattr(caught.value, "__notes__", []))
            assert "items 0 to 1 of the map" in notes
            assert results.submitted == 4, "the next chunk was not queued"
            assert results.completed == 0
            assert pool.statistics().broken == 1
            assert await pool.run_sync(funcs.echo, "after") == "after"


@pytest.mark.procio_leak_check
async def test_an_error_with_a_chunk_queued_reports_nothing_of_that_chunk() -> None:
    # Item 0 raises while chunk (1,) is queued; the worker may run that chunk, but its
    # result is not reported, and it does not reach the next call either.
    items = [(i, 0) for i in range(30)]
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            got: list[int] = []
            results = pool.map(mfuncs.fail_on, items, chunksize=1)
            with pytest.raises(ValueError, match="refusing 0") as caught:
                await collect_in_block(results, got)
            assert got == []
            assert results.failed_index == 0
            assert "item 0 of the map" in "\n".join(getattr(caught.value, "__notes__", []))
            for value in ("a", "b", "c"):
                assert await pool.run_sync(funcs.echo, value) == value
            assert [y async for y in pool.map(funcs.echo, range(40), chunksize=3)] == list(
                range(40)
            )
            assert pool.statistics().started == 1


async def test_a_queued_chunk_larger_than_the_pipe_does_not_deadlock() -> None:
    # Chunks of 4 MiB both ways on one worker: the queued chunk cannot go out whole
    # while the worker writes the running chunk's 4 MiB answer. Written in full only once
    # that answer is read, it deadlocks neither side.
    items = [bytes([i]) * (1 << 20) for i in range(12)]
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            got = [y async for y in pool.map(funcs.echo, items, chunksize=4)]
    assert got == items


@pytest.mark.procio_leak_check
async def test_cancelled_while_a_large_chunk_is_queued_behind_a_large_answer() -> None:
    # Chunk A (4 x 1 MiB, 0.25 s per item) runs and answers 4 MiB; chunk B, 4 MiB too,
    # waits half written behind it. The map is cancelled while A runs: telling the
    # worker to drop B must not wait for room in a pipe that the worker fills with A's
    # answer, nor may the rest of B's frame (a deadlock either way).
    items = [(0.25, bytes([i]) * (1 << 20)) for i in range(12)]
    async with WorkerPool(max_workers=1, prestart=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            results = pool.map(mfuncs.sleep_then_echo, items, chunksize=4)
            with anyio.move_on_after(0.5) as scope:
                await collect_in_block(results, [])
            assert scope.cancelled_caught
            assert results.submitted == 8
            assert results.completed == 0
            assert pool.statistics().broken == 0
            assert await pool.run_sync(funcs.echo, b"x" * (3 << 20)) == b"x" * (3 << 20)
            assert pool.statistics().started == 1


async def test_the_worker_drops_a_queued_batch_that_a_close_follows() -> None:
    # On the protocol itself: BATCH 1 runs (0.3 s); BATCH 2 waits behind it, then CLOSE.
    # BATCH 2 is answered with END alone, and never runs; BATCH 1 runs in full.
    async with ProcessBackend() as backend:
        worker = await backend.start_worker({})
        assert isinstance(worker, ProcessWorker)
        try:
            assert worker.pipelines
            with anyio.fail_after(HANG_GUARD):
                first = backend.prepare_batch(mfuncs.sleep_then_echo, [((0.3, "a"),)])
                second = backend.prepare_batch(mfuncs.pid_of, [("x",), ("y",)])
                await worker.send_batch(first)
                worker.queue_batch(second)
                assert worker.try_drop_queued()
                assert await worker.receive_batch() == ["a"]
                assert await worker.receive_batch() == []
                # Not dropped once begun: a CLOSE that comes late changes nothing.
                await worker.send_batch(second)
                await anyio.sleep(0.2)
                await worker.drop_queued()
                assert await worker.receive_batch() == [worker.pid, worker.pid]
                # The late CLOSE was left in the pipe: the next call is not confused by it.
                assert await worker.call(backend.prepare_call(os.getpid, ())) == worker.pid
        finally:
            worker.kill()
            await worker.aclose()
