"""WorkerPool.stream: every item in order, promptly, with backpressure and clean exits."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, RemoteTraceback, SerializationError, WorkerPool
from procio_workers._process_backend import ProcessWorker

if TYPE_CHECKING:
    from tests.procio_held_start import HeldStart

    from tests import procio_map_testfuncs as mfuncs
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_map_testfuncs as mfuncs
    import procio_workers_testfuncs as funcs
    from procio_held_start import HeldStart

pytestmark = pytest.mark.anyio

HANG_GUARD = 45
MIB = 1 << 20


T = TypeVar("T")


async def collect(results: AsyncIterator[T], into: list[T]) -> None:
    """Append every item of *results* to *into*: what came before an error stays there."""
    async for item in results:
        into.append(item)


# -- every item, in order ----------------------------------------------------------------


async def test_a_hundred_thousand_items_arrive_in_order(pool: WorkerPool) -> None:
    with anyio.fail_after(HANG_GUARD):
        async with pool.stream(mfuncs.count_up, 100_000) as items:
            got = [item async for item in items]
            assert items.received == 100_000
    assert got == list(range(100_000))


async def test_an_empty_generator_gives_nothing(pool: WorkerPool) -> None:
    with anyio.fail_after(HANG_GUARD):
        got = [item async for item in pool.stream(mfuncs.count_up, 0)]
    assert got == []
    assert await pool.run_sync(funcs.echo, "after") == "after"
    assert pool.statistics().started == 1


async def test_items_of_a_mebibyte_each_arrive_whole(pool: WorkerPool) -> None:
    with anyio.fail_after(HANG_GUARD):
        got = [item async for item in pool.stream(mfuncs.big_items, 10, MIB)]
    assert [len(item) for item in got] == [MIB] * 10
    assert [item == bytes([i]) * MIB for i, item in enumerate(got)] == [True] * 10


async def test_streams_one_after_another_reuse_one_worker(pool: WorkerPool) -> None:
    with anyio.fail_after(HANG_GUARD):
        for n in (3, 0, 500, 1):
            assert [item async for item in pool.stream(mfuncs.count_up, n)] == list(range(n))
    assert pool.statistics().started == 1
    assert pool.statistics().busy == 0


# -- promptness and backpressure ---------------------------------------------------------


async def test_an_item_arrives_while_the_generator_still_runs(
    pool: WorkerPool, tmp_path: Path
) -> None:
    # The generator blocks after its first item until the test creates the file: a
    # worker (or parent) that holds items back until a frame fills never delivers it.
    go = tmp_path / "go"
    with anyio.fail_after(20):
        async with pool.stream(mfuncs.first_then_wait, str(go), 30.0) as items:
            assert await items.__anext__() == "first"
            assert items.received == 1
            go.touch()
            assert await items.__anext__() == "second"
            with pytest.raises(StopAsyncIteration):
                await items.__anext__()


async def test_a_slow_reader_holds_the_generator_back(pool: WorkerPool, tmp_path: Path) -> None:
    counter = tmp_path / "produced"
    with anyio.fail_after(HANG_GUARD):
        async with pool.stream(mfuncs.endless_counted, str(counter)) as items:
            got = [await items.__anext__() for _ in range(10)]
            await anyio.sleep(0.5)
            produced = int(counter.read_text())
            await anyio.sleep(0.3)
            assert int(counter.read_text()) == produced, "the generator ran on unread"
            # Later items still come in order after the pause.
            got += [await items.__anext__() for _ in range(3000)]
    assert got == list(range(3010))
    assert 10 <= produced <= 10 + 2000


# -- leaving early -----------------------------------------------------------------------


@pytest.mark.procio_leak_check
async def test_leaving_early_closes_the_generator_in_the_worker_and_keeps_it(
    tmp_path: Path,
) -> None:
    closed = tmp_path / "closed"
    async with WorkerPool(max_workers=2) as pool:
        got: list[tuple[int, int]] = []
        with anyio.fail_after(HANG_GUARD):
            async with pool.stream(mfuncs.endless_with_finally, str(closed)) as items:
                async for item in items:
                    got.append(item)
                    if len(got) == 5:
                        break
            # The generator's finally block ran in the worker before __aexit__ returned.
            worker_pid = got[0][0]
            assert closed.read_text() == f"closed:{worker_pid}"
            assert [i for _, i in got] == [0, 1, 2, 3, 4]
            assert pool.statistics().busy == 0
            assert await pool.run_sync(mfuncs.pid) == worker_pid
        assert pool.statistics().started == 1


async def test_a_stream_left_while_its_worker_starts_never_begins(tmp_path: Path) -> None:
    # The caller leaves the block while the stream's worker is starting, and that start
    # ends with no checkpoint after the leaving (held here by a shielded wait, as a
    # start that completes in the same pass of the event loop would be). The
    # generator must then never begin in that worker.
    counted = tmp_path / "produced"
    async with WorkerPool(max_workers=1) as pool:
        held = HeldStart(pool)

        async def release_once_all_wait() -> None:
            await held.started.wait()
            await anyio.wait_all_tasks_blocked()  # the caller waits in __aexit__ now
            held.release()

        with anyio.fail_after(HANG_GUARD):
            async with anyio.create_task_group() as tg:
                tg.start_soon(release_once_all_wait)
                async with pool.stream(mfuncs.endless_counted, str(counted)):
                    await held.started.wait()
            assert held.released
            assert not counted.exists(), "the generator began after the stream was left"
            assert pool.statistics().busy == 0
            assert await pool.run_sync(funcs.echo, "after") == "after"


@pytest.mark.procio_leak_check
async def test_a_plain_break_closes_the_generator_in_the_background(tmp_path: Path) -> None:
    closed = tmp_path / "closed"
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            async for item in pool.stream(mfuncs.endless_with_finally, str(closed)):
                pid = item[0]
                break
            # The only worker must come back, its generator closed, for this call to run.
            assert await pool.run_sync(mfuncs.pid) == pid
        assert closed.read_text() == f"closed:{pid}"
        assert pool.statistics().started == 1


@pytest.mark.procio_leak_check
async def test_a_cancelled_cancellable_stream_kills_its_worker() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            with anyio.CancelScope() as scope:
                # The generator sleeps past the hang guard: a cancellation that waits
                # for its next item instead of killing the worker fails the test.
                sleep = HANG_GUARD * 2
                async with pool.stream(mfuncs.pid_then_sleep, sleep, cancellable=True) as items:
                    victim = await items.__anext__()
                    scope.cancel()
                    await items.__anext__()
            assert scope.cancelled_caught
            # Leaving the block returned once the killed worker was reaped.
            assert not funcs.pid_exists(victim)
            assert pool.statistics().busy == 0
            assert await pool.run_sync(mfuncs.pid) != victim
            assert [i async for i in pool.stream(mfuncs.count_up, 4)] == [0, 1, 2, 3]


@pytest.mark.procio_leak_check
async def test_keyboard_interrupt_in_the_loop_body_leaves_the_pool_correct() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):

            async def interrupted() -> None:
                async with pool.stream(mfuncs.slow_count, 1000, 0.01) as items:
                    async for item in items:
                        if item == 3:
                            raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                await interrupted()
            assert [i async for i in pool.stream(mfuncs.count_up, 5)] == list(range(5))
            assert await pool.run_sync(funcs.echo, "mine") == "mine"
        assert pool.statistics().busy == 0


# Trio only: there a Ctrl-C becomes a KeyboardInterrupt in whatever task runs. On asyncio
# the runner turns it into a cancellation of the main task instead.
@pytest.mark.parametrize("anyio_backend", ["trio"])
@pytest.mark.parametrize("where", ["_send", "_skip_to_end"])
async def test_an_interrupt_while_a_stream_closes_never_breaks_the_next_call(
    monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    # On Trio a Ctrl-C lands in whatever runs, shielded or not: here, while the parent
    # tells the worker to close the generator, or waits for its END. That worker may be
    # kept only once it is idle again; the next map and call must get their own results,
    # not a protocol error from a worker still in the stream.
    real = getattr(ProcessWorker, where)
    armed: list[bool] = []

    async def interrupted(self: ProcessWorker, *args: Any) -> Any:
        if armed and armed.pop():
            raise KeyboardInterrupt
        return await real(self, *args)

    monkeypatch.setattr(ProcessWorker, where, interrupted)

    async def leave_early(pool: WorkerPool) -> None:
        async with pool.stream(mfuncs.count_up, 100_000) as items:
            async for item in items:
                if item == 2:
                    armed.append(True)
                    break

    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            # Where the interrupt comes out (the iteration, or nowhere) is not the point.
            with suppress(KeyboardInterrupt):
                await leave_early(pool)
            assert not armed, "the interrupt was never raised"
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(10))]
            assert got == [3 * x + 1 for x in range(10)]
            assert await pool.run_sync(funcs.echo, "mine") == "mine"
            assert [i async for i in pool.stream(mfuncs.count_up, 3)] == [0, 1, 2]
        assert pool.statistics().busy == 0


# -- errors ------------------------------------------------------------------------------


async def test_an_exception_comes_after_every_item_before_it(pool: WorkerPool) -> None:
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD):
        with pytest.raises(ValueError, match="raised after 3 items") as caught:
            await collect(pool.stream(mfuncs.raise_after, 3), got)
    assert got == [0, 1, 2]
    assert type(caught.value) is ValueError
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "raise_after" in caught.value.__cause__.traceback
    assert await pool.run_sync(funcs.echo, "fine") == "fine"
    assert pool.statistics().broken == 0


async def test_a_function_that_returns_no_iterator_is_a_type_error(pool: WorkerPool) -> None:
    # Deliberately not a generator function, whatever its annotation says.
    not_a_generator = cast("Callable[[], Iterator[int]]", mfuncs.returns_five)
    with anyio.fail_after(HANG_GUARD), pytest.raises(TypeError, match="iter"):
        await collect(pool.stream(not_a_generator), [])
    assert await pool.run_sync(funcs.echo, "fine") == "fine"
    assert pool.statistics().broken == 0


async def test_an_item_that_cannot_be_pickled_comes_after_the_items_before_it(
    pool: WorkerPool,
) -> None:
    got: list[object] = []
    with anyio.fail_after(HANG_GUARD), pytest.raises(SerializationError):
        await collect(pool.stream(mfuncs.lock_at, 4), got)
    assert got == [0, 1, 2, 3]
    assert await pool.run_sync(funcs.echo, "fine") == "fine"
    assert pool.statistics().broken == 0


@pytest.mark.procio_leak_check
async def test_a_worker_killed_mid_stream_fails_that_stream_only() -> None:
    async with WorkerPool(max_workers=1) as pool:
        got: list[int] = []
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(BrokenWorkerProcess):
                await collect(pool.stream(mfuncs.killed_after, 3), got)
            assert got == [0, 1, 2]
            assert [i async for i in pool.stream(mfuncs.count_up, 3)] == [0, 1, 2]
        assert pool.statistics().broken == 1


async def test_items_that_each_fit_a_small_frame_limit_all_arrive() -> None:
    # The reader is slow, so the worker groups items: a group must still fit a frame.
    sizes = [400] * 60
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        got: list[bytes] = []
        with anyio.fail_after(HANG_GUARD):
            async for item in pool.stream(mfuncs.sized_items, sizes):
                got.append(item)
                await anyio.sleep(0.005)
        assert got == [bytes([n]) * 400 for n in range(60)]
        assert pool.statistics().broken == 0


async def test_an_item_over_the_frame_limit_comes_after_the_items_before_it() -> None:
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        pid = await pool.run_sync(mfuncs.pid)
        got: list[bytes] = []
        with anyio.fail_after(HANG_GUARD), pytest.raises(SerializationError):
            await collect(pool.stream(mfuncs.sized_items, [10, 20, 5000, 30]), got)
        assert got == [b"\0" * 10, b"\1" * 20]
        assert await pool.run_sync(mfuncs.pid) == pid
        assert pool.statistics().broken == 0


async def test_a_closed_or_unentered_pool_refuses_a_stream() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pass
    with pytest.raises(anyio.ClosedResourceError):
        async for _ in pool.stream(mfuncs.count_up, 3):
            pass
    fresh = WorkerPool(max_workers=1)
    with pytest.raises(RuntimeError, match="context manager"):
        async for _ in fresh.stream(mfuncs.count_up, 3):
            pass
