"""WorkerPool.map on DaskBackend: one Dask task per chunk, errors by item, cancellation."""

# distributed leaves Client and several of its methods unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import hashlib
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import anyio
import pytest
from distributed import Client
from procio_dask import DaskBackend
from procio_workers import (
    BatchError,
    BrokenWorkerProcess,
    MapResults,
    RemoteTraceback,
    SerializationError,
    WorkerError,
    WorkerPool,
)

pytestmark = pytest.mark.anyio

T = TypeVar("T")


def _functions_for_the_cluster() -> SimpleNamespace:
    """Nested, so that they travel by value (the Dask workers cannot import this file)."""

    def square_in_task(value: int) -> tuple[int, str]:
        """The square of *value*, and the key of the Dask task that computed it."""
        # The task thread's state, which distributed does not re-export (mypy misses it).
        from distributed.worker import thread_state  # type: ignore[attr-defined]

        return value * value, str(thread_state.key)

    def fail_at_37(value: int) -> int:
        if value == 37:
            raise ValueError(f"no good: {value}")
        return -value

    def lock_at_3(value: int) -> object:
        return threading.Lock() if value == 3 else value

    def exit_at_2(value: int) -> int:
        if value == 2:
            raise SystemExit(9)
        return value

    def mark_and_nap(job: tuple[int, str, float]) -> int:
        value, folder, seconds = job
        Path(folder, f"started-{value}").touch()
        time.sleep(seconds)
        Path(folder, f"finished-{value}").touch()
        return value

    def touch(path: str) -> str:
        Path(path).touch()
        return path

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def kill_own_process(value: int) -> int:
        if value == 5:
            os.kill(os.getpid(), 9)
        return value

    def generate(count: int) -> Iterator[int]:
        yield from range(count)

    def lock_in_error_at_4(value: int) -> int:
        if value == 4:
            error = ValueError("holds a lock")
            error.lock = threading.Lock()  # type: ignore[attr-defined]  # unpicklable
            raise error
        return value

    def nap(value: float) -> float:
        time.sleep(value)
        return value

    def refuse_to_load() -> None:
        raise RuntimeError("this object cannot be rebuilt here")

    class Unloadable:
        """Pickles anywhere; unpickling it (on the Dask worker) raises."""

        def __reduce__(self) -> tuple[object, ...]:
            return (refuse_to_load, ())

    return SimpleNamespace(**locals())


remote = _functions_for_the_cluster()


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll *check* until it holds or *timeout* seconds pass; return its last answer."""
    with anyio.move_on_after(timeout):
        # What is polled (files, the scheduler's state) has no event to wait on.
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return check()


def scheduler_tasks(client: Client) -> int:
    """How many tasks the scheduler still tracks, for every client."""
    count: int = client.run_on_scheduler(_count_tasks)
    return count


def _count_tasks(dask_scheduler: object) -> int:
    return len(dask_scheduler.tasks)  # type: ignore[attr-defined]


async def collect(results: AsyncIterator[T], into: list[T]) -> None:
    """Append every result to *into*, so that what came before an exception is kept."""
    async for value in results:
        into.append(value)


async def run_map(results: MapResults[T], into: list[T]) -> None:
    """Iterate *results* inside its ``async with`` block, appending to *into*."""
    async with results:
        await collect(results, into)


async def settled(folder: Path) -> set[int]:
    """Wait until every item started in *folder* has finished and none started for a while."""
    with anyio.fail_after(10):
        while True:
            before = marks(folder, "started")
            await anyio.sleep(0.3)
            after = marks(folder, "started")
            if after == before == marks(folder, "finished"):
                return after


def any_exists(paths: list[str]) -> bool:
    return any(os.path.exists(path) for path in paths)


def marks(folder: Path, kind: str) -> set[int]:
    return {int(path.name.split("-")[1]) for path in folder.glob(f"{kind}-*")}


# -- results ------------------------------------------------------------------------------


async def test_a_map_of_1000_items_gives_what_builtin_map_gives(address: str) -> None:
    items = list(range(-500, 500))
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        async with pool.map(remote.square_in_task, items) as results:
            got = [value async for value, _ in results]
        assert results.completed == results.submitted == results.total == 1000
    assert got == [value * value for value in items]


@pytest.mark.parametrize("ordered", [True, False], ids=["ordered", "unordered"])
async def test_each_chunk_of_a_map_is_one_dask_task(address: str, ordered: bool) -> None:
    async with (
        WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool,
        pool.map(remote.square_in_task, range(1000), chunksize=100, ordered=ordered) as results,
    ):
        pairs = [(index, key) async for index, key in _indexed(results)]
    # Each key (one Dask task) covers exactly one run of 100 consecutive items.
    keys: dict[str, list[int]] = {}
    for index, key in pairs:
        keys.setdefault(key, []).append(index)
    assert len(keys) == 10
    assert sorted(tuple(sorted(run)) for run in keys.values()) == [
        tuple(range(start, start + 100)) for start in range(0, 1000, 100)
    ]


async def _indexed(results: AsyncIterator[tuple[int, str]]) -> AsyncIterator[tuple[int, str]]:
    """Pair each ``(square, key)`` with the item it came from (the root of the square)."""
    async for square, key in results:
        yield round(square**0.5), key


async def test_an_unordered_map_gives_every_result_once(address: str) -> None:
    async with (
        WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool,
        pool.map(remote.square_in_task, range(300), chunksize=7, ordered=False) as results,
    ):
        got = [square async for square, _ in results]
    assert sorted(got) == [value * value for value in range(300)]


async def test_an_async_iterable_is_mapped_in_order(address: str) -> None:
    async def source() -> AsyncIterator[int]:
        for value in range(50):
            await anyio.lowlevel.checkpoint()
            yield value

    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        got = [square async for square, _ in pool.map(remote.square_in_task, source())]
    assert got == [value * value for value in range(50)]


async def test_large_buffers_in_a_map_travel_scattered(address: str, client: Client) -> None:
    # 12 MiB each: inside the task, Dask would warn of a large graph (an error here).
    blobs = [os.urandom(12 << 20) for _ in range(2)]
    async with (
        WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool,
        pool.map(remote.digest, blobs, chunksize=2) as results,
    ):
        got = [digest async for digest in results]
    assert got == [hashlib.sha256(blob).hexdigest() for blob in blobs]
    assert await eventually(lambda: scheduler_tasks(client) == 0)


# -- errors -------------------------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [10, 1, None], ids=lambda size: f"chunksize={size}")
async def test_an_exception_at_item_37_comes_out_after_every_result_before_it(
    address: str, chunksize: int | None
) -> None:
    got: list[int] = []
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        results = pool.map(remote.fail_at_37, range(100), chunksize=chunksize)
        with pytest.raises(ValueError, match="no good: 37") as caught:
            await run_map(results, got)
        assert results.failed_index == 37
        assert await pool.run_sync(abs, -1) == 1
        assert pool.statistics().broken == 0
    assert got == [-value for value in range(37)]
    assert any("item 37" in note for note in getattr(caught.value, "__notes__", ()))
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "in fail_at_37" in cause.traceback
    assert "procio_dask" not in cause.traceback


async def test_an_unordered_map_raises_the_failing_items_exception(address: str) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        results = pool.map(remote.fail_at_37, range(100), chunksize=10, ordered=False)
        with pytest.raises(ValueError, match="no good: 37"):
            await run_map(results, [])
        assert results.failed_index == 37


async def test_an_unserializable_item_is_a_serialization_error_for_that_item(
    address: str, client: Client
) -> None:
    items: list[object] = [1, 2, threading.Lock(), 4]
    got: list[str] = []
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        results = pool.map(repr, items, chunksize=4)
        with pytest.raises(SerializationError, match="lock") as caught:
            await run_map(results, got)
        assert results.failed_index == 2
        assert pool.statistics().broken == 0
    # Like builtin map: the items before it ran, the ones after it did not.
    assert got == ["1", "2"]
    assert any("item 2" in note for note in getattr(caught.value, "__notes__", ()))
    assert await eventually(lambda: scheduler_tasks(client) == 0)


async def test_an_item_the_dask_worker_cannot_rebuild_fails_alone(address: str) -> None:
    items: list[object] = [0, 1, 2, remote.Unloadable(), 4, 5]
    got: list[str] = []
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        results = pool.map(repr, items, chunksize=6)
        with pytest.raises(SerializationError, match="rebuilt on the Dask worker") as caught:
            await run_map(results, got)
        assert results.failed_index == 3
        assert await pool.run_sync(abs, -1) == 1
    assert got == ["0", "1", "2"]
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "cannot be rebuilt here" in caught.value.__cause__.traceback


async def test_an_unserializable_first_item_reaches_no_dask_worker(address: str) -> None:
    backend = DaskBackend(address)
    async with backend:
        worker = await backend.start_worker({})
        request = backend.prepare_batch(repr, [(threading.Lock(),), (1,)])
        with pytest.raises(BatchError) as caught:
            await worker.call_batch(request)
        assert caught.value.index == 0
        assert caught.value.results == []
        assert isinstance(caught.value.error, SerializationError)
        assert worker.alive
        await worker.aclose()


async def test_an_unserializable_result_is_a_serialization_error_for_its_item(
    address: str,
) -> None:
    got: list[object] = []
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        results = pool.map(remote.lock_at_3, range(6), chunksize=6)
        with pytest.raises(SerializationError, match="result") as caught:
            await run_map(results, got)
        assert results.failed_index == 3
        assert await pool.run_sync(abs, -1) == 1
    assert got == [0, 1, 2]
    assert isinstance(caught.value.__cause__, RemoteTraceback)


async def test_system_exit_in_an_item_is_a_worker_error_in_the_batch(address: str) -> None:
    async with DaskBackend(address) as backend:
        worker = await backend.start_worker({})
        request = backend.prepare_batch(remote.exit_at_2, [(value,) for value in range(5)])
        with pytest.raises(BatchError) as caught:
            await worker.call_batch(request)
        assert caught.value.index == 2
        assert caught.value.results == [0, 1]
        error = caught.value.error
        assert isinstance(error, WorkerError)
        assert error.type_name == "builtins.SystemExit"
        assert isinstance(error.__cause__, RemoteTraceback)
        assert worker.alive
        assert await worker.call_batch(backend.prepare_batch(abs, [(-3,), (-4,)])) == [3, 4]
        await worker.aclose()


async def test_an_exception_that_cannot_travel_is_a_worker_error_for_its_item(
    address: str,
) -> None:
    got: list[int] = []
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        results = pool.map(remote.lock_in_error_at_4, range(8), chunksize=8)
        with pytest.raises(WorkerError) as caught:
            await run_map(results, got)
        assert results.failed_index == 4
        assert pool.statistics().broken == 0
    assert got == [0, 1, 2, 3]
    assert caught.value.type_name == "builtins.ValueError"
    assert "in lock_in_error_at_4" in caught.value.traceback


async def test_maps_cancelled_at_random_leave_nothing_on_the_cluster(
    address: str, client: Client
) -> None:
    rng = random.Random(1234)
    async with WorkerPool(max_workers=3, backend=DaskBackend(address)) as pool:
        for round_ in range(6):
            cancellable = round_ % 2 == 0
            with anyio.move_on_after(rng.uniform(0.0, 0.3)):
                async with pool.map(
                    remote.nap,
                    [0.02] * 40,
                    chunksize=rng.choice([1, 3, None]),
                    cancellable=cancellable,
                ) as results:
                    async for _ in results:
                        pass
            # Every map's futures are released, and the pool still answers right.
            async with pool.map(abs, range(-5, 0)) as results:
                assert [value async for value in results] == [5, 4, 3, 2, 1]
        assert pool.statistics().broken == 0
    assert await eventually(lambda: scheduler_tasks(client) == 0)


async def test_a_dask_worker_lost_under_a_chunk_breaks_only_that_map(
    address: str, client: Client
) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        results = pool.map(remote.kill_own_process, range(10), chunksize=10)
        with pytest.raises(BrokenWorkerProcess, match="Dask worker died"):
            await run_map(results, [])
        assert pool.statistics().broken == 1
        async with pool.map(abs, [-1, -2]) as results:
            assert [value async for value in results] == [1, 2]
    await anyio.to_thread.run_sync(lambda: client.wait_for_workers(2, timeout=30))


# -- leaving early ----------------------------------------------------------------------------


async def test_leaving_a_map_early_waits_for_running_chunks_and_starts_no_more(
    address: str, client: Client, tmp_path: Path
) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        async with pool.map(
            remote.mark_and_nap, ((v, str(tmp_path), 0.1) for v in range(40)), chunksize=1
        ) as results:
            async for value in results:
                assert value == 0
                break
        # Not cancellable: what was running has finished, nothing else started.
        started, finished = marks(tmp_path, "started"), marks(tmp_path, "finished")
        assert started == finished
        assert len(started) < 40
        await anyio.sleep(0.5)
        assert marks(tmp_path, "started") == started
    assert await eventually(lambda: scheduler_tasks(client) == 0)


async def test_breaking_out_of_a_plain_async_for_stops_the_map(
    address: str, client: Client, tmp_path: Path
) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        jobs = ((value, str(tmp_path), 0.1) for value in range(40))
        async for value in pool.map(remote.mark_and_nap, jobs, chunksize=1):
            assert value == 0
            break
        # The results object is garbage now: its work stops in the background. The
        # chunks already submitted finish (at most one per pool worker beside the two
        # that ran first); after them nothing starts (else two would, every 0.1 s).
        started = await settled(tmp_path)
        assert len(started) <= 4
        await anyio.sleep(0.5)
        assert marks(tmp_path, "started") == started
        assert await pool.run_sync(abs, -1) == 1
    assert await eventually(lambda: scheduler_tasks(client) == 0)


async def test_cancelling_a_cancellable_map_drops_its_queued_dask_tasks(
    address: str, client: Client, tmp_path: Path
) -> None:
    # Both single-threaded Dask workers are busy for a second, so the map's chunks wait
    # in the scheduler's queue when the map is cancelled.
    blocked = tmp_path / "blockers"
    blocked.mkdir()
    blockers = [
        client.submit(remote.mark_and_nap, (value, str(blocked), 1.0), pure=False)
        for value in range(2)
    ]
    # Only once both run is the cluster full: a chunk submitted before could run at once.
    assert await eventually(lambda: marks(blocked, "started") == {0, 1})
    paths = [str(tmp_path / f"ran-{value}") for value in range(6)]
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        with anyio.move_on_after(0.3) as scope:
            async with pool.map(remote.touch, paths, chunksize=1, cancellable=True) as results:
                async for _ in results:
                    pytest.fail("no chunk can finish while the Dask workers are blocked")
        assert scope.cancelled_caught
        await anyio.to_thread.run_sync(client.gather, blockers)
        for blocker in blockers:
            blocker.release()
        await anyio.sleep(0.5)
        assert not any_exists(paths)
        assert await pool.run_sync(abs, -3) == 3
    assert await eventually(lambda: scheduler_tasks(client) == 0)


async def test_a_killed_worker_abandons_its_chunk(address: str, tmp_path: Path) -> None:
    async with DaskBackend(address) as backend:
        worker = await backend.start_worker({})
        request = backend.prepare_batch(
            remote.mark_and_nap, [((value, str(tmp_path), 1.0),) for value in range(3)]
        )
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                with pytest.raises(BrokenWorkerProcess, match="killed"):
                    await worker.call_batch(request)

            tg.start_soon(run)
            assert await eventually(lambda: marks(tmp_path, "started") == {0})
            worker.kill()
        assert not worker.alive
        assert marks(tmp_path, "finished") == set()
        await worker.aclose()


# -- not supported ------------------------------------------------------------------------


async def test_stream_is_refused_with_a_clear_type_error(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        items = pool.stream(remote.generate, 3)
        with pytest.raises(TypeError, match="cannot stream generators"):
            async with items:
                await collect(items, [])
        assert await pool.run_sync(abs, -1) == 1
        assert pool.statistics().broken == 0
