"""WorkerPool.map: results like builtin map, bounded pulls, errors, early exits, figures.

Each test names the behaviour it proves; the worker side of each lives in
``procio_map_testfuncs``.
"""

from __future__ import annotations

import os
import sys
import threading
from collections import Counter
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procio_workers import (
    BrokenWorkerProcess,
    MapResults,
    RemoteTraceback,
    SerializationError,
    WorkerPool,
)
from procio_workers._process_backend import ProcessWorker

if TYPE_CHECKING:
    from tests.procio_held_start import HeldStart
    from tests.procio_scripts import run_script

    from tests import procio_map_testfuncs as mfuncs
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_map_testfuncs as mfuncs
    import procio_workers_testfuncs as funcs
    from procio_held_start import HeldStart
    from procio_scripts import run_script

pytestmark = pytest.mark.anyio

T = TypeVar("T")

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45


def expected(xs: list[int]) -> list[int]:
    return [mfuncs.triple_plus_one(x) for x in xs]


async def collect(results: AsyncIterator[T], into: list[T]) -> None:
    """Append every item of *results* to *into*: what came before an error stays there."""
    async for item in results:
        into.append(item)


async def collect_in_block(results: MapResults[T], into: list[T]) -> None:
    """Do what :func:`collect` does inside ``async with results``."""
    async with results:
        await collect(results, into)


def notes_of(exc: BaseException) -> str:
    return "\n".join(getattr(exc, "__notes__", []))


async def wait_until_idle(pool: WorkerPool) -> None:
    """Wait until no worker of *pool* is busy (background clean-up after a plain break)."""
    with anyio.fail_after(10):
        while pool.statistics().busy:  # noqa: ASYNC110 - the pool has no event for this
            await anyio.sleep(0.01)


def names(folder: Path, prefix: str) -> set[int]:
    return {int(p.name.split(".")[1]) for p in folder.glob(f"{prefix}.*")}


# -- results like builtin map ------------------------------------------------------------


def source_of(kind: str, size: int) -> Iterable[int] | AsyncIterable[int]:
    """The numbers ``0 .. size - 1`` as a list, a range, a generator or an async generator."""
    if kind == "list":
        return list(range(size))
    if kind == "range":
        return range(size)
    if kind == "generator":
        return (i for i in range(size))

    async def numbers() -> AsyncIterator[int]:
        for i in range(size):
            if i % 64 == 0:
                await anyio.lowlevel.checkpoint()
            yield i

    return numbers()


@pytest.mark.parametrize("size", [0, 1, 1000, 20_000])
@pytest.mark.parametrize("kind", ["list", "range", "generator", "async generator"])
@pytest.mark.parametrize("chunksize", [1, 7, None])
async def test_ordered_results_equal_builtin_map(
    pool: WorkerPool, size: int, kind: str, chunksize: int | None
) -> None:
    with anyio.fail_after(HANG_GUARD):
        got = [
            y
            async for y in pool.map(
                mfuncs.triple_plus_one, source_of(kind, size), chunksize=chunksize
            )
        ]
    assert got == expected(list(range(size)))


@pytest.mark.parametrize("chunksize", [1, 7, None])
async def test_unordered_results_are_the_same_multiset(
    pool: WorkerPool, chunksize: int | None
) -> None:
    # Repeated values: a multiset, not a set, must match (a duplicated or lost result of
    # one chunk shows up).
    xs = [i % 97 for i in range(2000)]
    with anyio.fail_after(HANG_GUARD):
        got = [
            y
            async for y in pool.map(mfuncs.triple_plus_one, xs, chunksize=chunksize, ordered=False)
        ]
    assert Counter(got) == Counter(expected(xs))


@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    xs=st.lists(st.integers(-(2**40), 2**40), max_size=300),
    chunksize=st.one_of(st.none(), st.integers(1, 400)),
    ordered=st.booleans(),
)
async def test_any_list_and_chunksize_gives_builtin_map(
    pool: WorkerPool, xs: list[int], chunksize: int | None, ordered: bool
) -> None:
    # One pool for every example: a map must also leave the pool fit for the next one.
    with anyio.fail_after(HANG_GUARD):
        got = [
            y
            async for y in pool.map(
                mfuncs.triple_plus_one, xs, chunksize=chunksize, ordered=ordered
            )
        ]
    if ordered:
        assert got == expected(xs)
    else:
        assert Counter(got) == Counter(expected(xs))
    assert pool.statistics().busy == 0


# -- endless sources: backpressure --------------------------------------------------------


@pytest.mark.procio_leak_check
@pytest.mark.parametrize("chunksize", [1, 7])
async def test_an_endless_sync_source_is_pulled_a_bounded_number_of_items(
    chunksize: int,
) -> None:
    pulled = 0

    def endless() -> Iterator[int]:
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield i
            i += 1

    async with WorkerPool(max_workers=2) as pool:
        got: list[int] = []
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.triple_plus_one, endless(), chunksize=chunksize) as results:
                async for y in results:
                    got.append(y)
                    if len(got) == 50:
                        break
            at_exit = pulled
            await anyio.sleep(0.3)
        assert got == expected(list(range(50)))
        # A window of work in flight, not the whole (endless) source.
        assert 50 <= pulled <= 50 + 1000 * chunksize
        assert pulled == at_exit, "the source was still pulled after the map was left"
        assert pool.statistics().busy == 0
        assert await pool.run_sync(funcs.echo, "after") == "after"
        assert pool.statistics().started <= 2


@pytest.mark.procio_leak_check
async def test_an_endless_async_source_with_automatic_chunks_and_a_plain_break() -> None:
    pulled = 0

    async def endless() -> AsyncIterator[int]:
        nonlocal pulled
        i = 0
        while True:
            pulled += 1
            yield i
            i += 1

    async with WorkerPool(max_workers=2) as pool:
        got: list[tuple[int, int]] = []
        with anyio.fail_after(HANG_GUARD):
            # square_and_pid takes about a millisecond: automatic chunks stay small.
            async for y in pool.map(mfuncs.square_and_pid, endless()):
                got.append(y)
                if len(got) == 50:
                    break
            await wait_until_idle(pool)
        assert [square for square, _ in got] == [i * i for i in range(50)]
        assert 50 <= pulled <= 50 + 2000
        settled = pulled
        await anyio.sleep(0.3)
        assert pulled == settled
        assert await pool.run_sync(funcs.echo, "after") == "after"
        assert pool.statistics().busy == 0


# -- the first exception ----------------------------------------------------------------


@pytest.mark.parametrize("chunksize", [1, 7, None])
async def test_ordered_map_yields_every_result_before_the_failing_item(
    pool: WorkerPool, chunksize: int | None
) -> None:
    items = [(i, 37) for i in range(100)]
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD):
        async with pool.map(mfuncs.fail_on, items, chunksize=chunksize) as results:
            with pytest.raises(ValueError, match="refusing 37") as caught:
                await collect(results, got)
    assert got == [10 * i for i in range(37)]
    assert type(caught.value) is ValueError
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "fail_on" in caught.value.__cause__.traceback
    assert "item 37" in notes_of(caught.value)
    assert results.failed_index == 37
    assert pool.statistics().busy == 0
    assert await pool.run_sync(funcs.echo, "next") == "next"


@pytest.mark.parametrize("chunksize", [1, 7, None])
async def test_unordered_map_raises_the_failure_after_only_correct_results(
    pool: WorkerPool, chunksize: int | None
) -> None:
    items = [(i, 37) for i in range(100)]
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD):
        async with pool.map(mfuncs.fail_on, items, chunksize=chunksize, ordered=False) as results:
            with pytest.raises(ValueError, match="refusing 37") as caught:
                await collect(results, got)
    assert isinstance(caught.value.__cause__, RemoteTraceback)
    assert "item 37" in notes_of(caught.value)
    assert results.failed_index == 37
    # Only true results of other items, none twice.
    assert all(y % 10 == 0 and y // 10 != 37 and 0 <= y // 10 < 100 for y in got)
    assert len(set(got)) == len(got)
    assert pool.statistics().busy == 0


async def test_a_failure_with_plain_async_for_is_the_functions_own_type(
    pool: WorkerPool,
) -> None:
    with anyio.fail_after(HANG_GUARD), pytest.raises(ValueError) as caught:
        async for _ in pool.map(mfuncs.fail_on, [(i, 0) for i in range(5)]):
            pass
    assert "item 0" in notes_of(caught.value)
    assert isinstance(caught.value.__cause__, RemoteTraceback)


# -- leaving early -------------------------------------------------------------------------


@pytest.mark.procio_leak_check
@pytest.mark.parametrize("chunksize", [1, 3])
@pytest.mark.parametrize("how", ["break", "body_error"])
async def test_leaving_the_block_stops_the_map_and_keeps_the_workers(
    tmp_path: Path, how: str, chunksize: int
) -> None:
    items = [(str(tmp_path), i, 0.2) for i in range(30)]
    async with WorkerPool(max_workers=2, prestart=2) as pool:
        workers_before = pool.statistics().workers
        got: list[int] = []
        with anyio.fail_after(HANG_GUARD):
            try:
                async with pool.map(mfuncs.slow_recorded, items, chunksize=chunksize) as results:
                    async for y in results:
                        got.append(y)
                        if how == "break":
                            break
                        raise LookupError("the loop body gave up")
            except LookupError:
                assert how == "body_error"
            started = names(tmp_path, "started")
            finished = names(tmp_path, "finished")
            # Running items finished before __aexit__ returned (not cut off, not left
            # running), and no item starts afterwards.
            assert started == finished
            await anyio.sleep(0.6)
            assert names(tmp_path, "started") == started
            assert names(tmp_path, "finished") == finished
        assert got == [0]
        assert len(started) < len(items), "every item ran: nothing was cancelled"
        figures = pool.statistics()
        assert figures.busy == 0
        assert figures.workers == workers_before == 2
        assert figures.started == 2, "a worker was killed or replaced"
        # The iteration is over: no result of a chunk that was running comes out now.
        with pytest.raises(anyio.ClosedResourceError):
            await results.__anext__()
        assert await pool.run_sync(funcs.echo, "again") == "again"


async def break_at_item_0(
    pool: WorkerPool, folder: Path, seconds: Callable[[int], float], settle: float
) -> tuple[set[int], set[int]]:
    """Map ``slow_recorded`` over 40 items, leave a plain ``async for`` at item 0's
    result, wait until no worker is busy, and return the items started by then and
    *settle* seconds later."""
    items = [(str(folder), i, seconds(i)) for i in range(40)]
    with anyio.fail_after(HANG_GUARD):
        async for y in pool.map(mfuncs.slow_recorded, items, chunksize=1):
            assert y == 0
            break
        await wait_until_idle(pool)
        started = names(folder, "started")
        await anyio.sleep(settle)
    return started, names(folder, "started")


@pytest.mark.procio_leak_check
async def test_a_plain_break_stops_the_map_in_the_background(tmp_path: Path) -> None:
    async with WorkerPool(max_workers=2, prestart=2) as pool:
        started, later = await break_at_item_0(pool, tmp_path, lambda i: 0.1, 0.4)
        assert later == started
        assert len(started) < 40
        # Running items finished: no worker was killed or replaced.
        assert pool.statistics().started == 2
        assert pool.statistics().broken == 0


async def test_a_plain_break_starts_no_chunk_once_no_worker_is_busy(tmp_path: Path) -> None:
    # Item 0 runs while the lanes fill the ordered window and wait, holding no worker.
    # Its result moves the window and wakes them; the caller breaks at once. A lane
    # woken before the break must not start a chunk after it: from the moment no worker
    # is busy, nothing of the map runs. (On Trio the caller runs before the lanes about
    # half of the time, so several rounds are tried.)
    async with WorkerPool(max_workers=2, prestart=2) as pool:
        for round_ in range(8):
            folder = tmp_path / f"round{round_}"
            folder.mkdir()
            started, later = await break_at_item_0(
                pool, folder, lambda i: 0.3 if i == 0 else 0.0, 0.3
            )
            assert later == started, f"round {round_}"


@pytest.mark.procio_leak_check
async def test_a_plain_break_kills_a_cancellable_maps_running_item(tmp_path: Path) -> None:
    # Item 1 runs for 30 s on one worker; item 0 answers once item 1 has started.
    # Leaving a plain ``async for`` drops the results, and a cancellable map then kills
    # item 1's worker in the background instead of letting it run on.
    marker = tmp_path / "pid"
    items = [("wait", str(marker)), ("announce", str(marker))]
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            async for _ in pool.map(mfuncs.wait_or_announce, items, chunksize=1, cancellable=True):
                break
            victim = int(marker.read_text())
            # The killed worker counts as busy until it is reaped: until then it may
            # still run the item. A figure of no busy worker means it is gone.
            with anyio.fail_after(10):
                while pool.statistics().busy:
                    await anyio.lowlevel.checkpoint()
            assert not funcs.pid_exists(victim), "no busy worker, yet the killed one lives"
            assert await pool.run_sync(funcs.echo, "after") == "after"


@pytest.mark.procio_leak_check
async def test_a_cancellable_map_kills_the_worker_of_a_cancelled_item(tmp_path: Path) -> None:
    marker = tmp_path / "pid"
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:

                    async def cancel_once_running() -> None:
                        while not marker.exists():  # noqa: ASYNC110 - polls another process
                            await anyio.sleep(0.01)
                        scope.cancel()

                    tg.start_soon(cancel_once_running)
                    async with pool.map(
                        mfuncs.announce_pid_then_sleep,
                        [(str(marker), 30.0)],
                        cancellable=True,
                    ) as results:
                        async for _ in results:
                            raise AssertionError("a 30 s item returned")
            assert scope.cancelled_caught
            victim = int(marker.read_text())
            # Leaving the block returned once the killed worker was reaped.
            assert not funcs.pid_exists(victim)
            assert await pool.run_sync(mfuncs.pid) != victim
            assert [y async for y in pool.map(mfuncs.triple_plus_one, range(10))] == expected(
                list(range(10))
            )


@pytest.mark.procio_leak_check
async def test_keyboard_interrupt_in_the_loop_body_stops_the_map(tmp_path: Path) -> None:
    items = [(str(tmp_path), i, 0.05) for i in range(200)]
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):

            async def interrupted() -> None:
                async with pool.map(mfuncs.slow_recorded, items, chunksize=1) as results:
                    async for y in results:
                        if y == 2:
                            raise KeyboardInterrupt

            with pytest.raises(KeyboardInterrupt):
                await interrupted()
            started = names(tmp_path, "started")
            await anyio.sleep(0.3)
            assert names(tmp_path, "started") == started
            assert len(started) < len(items)
            # The next map gets its own results, not leftovers of the interrupted one.
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(1000, 1050))]
            assert got == expected(list(range(1000, 1050)))
            assert await pool.run_sync(funcs.echo, "mine") == "mine"
        assert pool.statistics().busy == 0


TRIO_SIGINT = """
import sys
import anyio
from procio_workers import WorkerPool
import procio_map_testfuncs as mfuncs

async def interrupted_map(pool):
    items = [(i, 5) for i in range(40)]
    async with pool.map(mfuncs.interrupt_parent_on, items, chunksize=1) as results:
        async for _ in results:
            pass

async def interrupted_stream(pool):
    async with pool.stream(mfuncs.interrupt_parent_after, 3) as items:
        async for _ in items:
            pass

async def main(kind):
    async with WorkerPool(max_workers=2) as pool:
        for _ in range(3):
            try:
                await (interrupted_map if kind == "map" else interrupted_stream)(pool)
            except KeyboardInterrupt:
                print("interrupted", pool.statistics().busy)
            print(*[y async for y in pool.map(mfuncs.triple_plus_one, range(5))])
            print(*[i async for i in pool.stream(mfuncs.count_up, 4)])
        print(pool.statistics().broken)

anyio.run(main, sys.argv[1], backend="trio")
"""


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_a_real_sigint_on_trio_reaches_the_iterating_task(tmp_path: Path, kind: str) -> None:
    # On Trio a SIGINT becomes a KeyboardInterrupt in whatever unprotected code runs
    # when it arrives. It must come out of the iteration, never out of a background task
    # of the pool (which would end the pool's block with an exception group), and the
    # program that catches it gets correct results from the next map and stream.
    assert run_script(tmp_path, TRIO_SIGINT, kind) == [
        *["interrupted 0", "1 4 7 10 13", "0 1 2 3"] * 3,
        "0",
    ]


TRIO_SIGINT_WHILE_CLOSING = """
import sys
from pathlib import Path

import anyio
from procio_workers import WorkerPool
from procio_workers import _mapping
import procio_map_testfuncs as mfuncs
import procio_workers_testfuncs as funcs

real_aclose = _mapping._Core.aclose

async def announced_aclose(self):
    Path("closing.part").write_text("")
    Path("closing.part").replace("closing")
    await real_aclose(self)

_mapping._Core.aclose = announced_aclose

def results(pool, kind):
    here = str(Path.cwd())
    if kind == "map":
        return pool.map(mfuncs.interrupt_parent_once_closing, [(0, here), (1, here)], chunksize=1)
    return pool.stream(mfuncs.interrupt_parent_once_closing_between_items, here)

async def main(kind):
    async with WorkerPool(max_workers=1) as pool:
        try:
            async with results(pool, kind) as values:
                async for value in values:
                    print("got", value)
                    while not Path("started").exists():
                        await anyio.sleep(0.005)
                    break
        except KeyboardInterrupt:
            print("interrupted", pool.statistics().busy)
        print(await pool.run_sync(funcs.echo, "next"))
        print("busy", pool.statistics().busy)

anyio.run(main, sys.argv[1], backend="trio")
"""


@pytest.mark.parametrize("kind", ["map", "stream"])
def test_a_real_sigint_on_trio_while_results_close_waits_for_the_running_work(
    tmp_path: Path, kind: str
) -> None:
    # Leaving a map waits for the call its worker runs (a stream, for its generator to
    # reach its next item). On Trio a Ctrl-C reaches the main task even in that shielded
    # wait; it must come out only once the work has ended, so that the block which
    # catches it finds no worker still held.
    assert run_script(tmp_path, TRIO_SIGINT_WHILE_CLOSING, kind) == [
        "got 0",
        "interrupted 0",
        "next",
        "busy 0",
    ]


# Trio only: there a Ctrl-C becomes a KeyboardInterrupt in whatever task runs. On asyncio
# the runner turns it into a cancellation of the main task instead.
@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_an_interrupt_while_a_chunk_is_answered_never_reaches_the_next_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A Ctrl-C on Trio may land while a lane reads a chunk's answer. That worker must
    # not be handed its next chunk with the old answer still on its way.
    real = ProcessWorker._receive
    armed: list[bool] = []

    async def interrupted(self: ProcessWorker, *args: Any) -> Any:
        if armed and armed.pop():
            raise KeyboardInterrupt
        return await real(self, *args)

    monkeypatch.setattr(ProcessWorker, "_receive", interrupted)

    async def interrupted_map(pool: WorkerPool) -> None:
        items = [(0.01, i) for i in range(200)]
        async with pool.map(mfuncs.sleep_then_echo, items, chunksize=3) as results:
            async for y in results:
                if y == 0:
                    armed.append(True)  # the next answer read is interrupted

    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            with suppress(KeyboardInterrupt):
                await interrupted_map(pool)
            assert not armed, "the interrupt was never raised"
            for _ in range(3):
                got = [y async for y in pool.map(mfuncs.triple_plus_one, range(100), chunksize=3)]
                assert got == expected(list(range(100)))
            assert await pool.run_sync(funcs.echo, "mine") == "mine"
        assert pool.statistics().busy == 0


async def test_an_error_in_the_loop_body_propagates_unchanged(pool: WorkerPool) -> None:
    error = RuntimeError("from the loop body")
    got: list[int] = []
    results = pool.map(mfuncs.triple_plus_one, range(100), chunksize=1)

    async def give_up_after_three() -> None:
        async with results:
            async for y in results:
                got.append(y)
                if len(got) == 3:
                    raise error

    with anyio.fail_after(HANG_GUARD), pytest.raises(RuntimeError) as caught:
        await give_up_after_three()
    assert caught.value is error
    assert caught.value.__cause__ is None
    assert got == expected([0, 1, 2])
    assert results.failed_index is None


async def test_aclose_ends_the_iteration(pool: WorkerPool) -> None:
    # Chunks of 7: six results of the first chunk are still held when it is closed.
    results = pool.map(mfuncs.triple_plus_one, range(100), chunksize=7)
    assert await results.__anext__() == 1
    await results.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await results.__anext__()
    await results.aclose()  # a second close is harmless
    assert pool.statistics().busy == 0


async def test_closing_inside_the_loop_ends_it_at_its_next_step(pool: WorkerPool) -> None:
    # Chunks of 7: when the first result is taken, six more of its chunk are at hand,
    # and the loop would hand them out without waiting if closing left them there.
    got = []

    async def take_and_close() -> None:
        async with pool.map(mfuncs.triple_plus_one, range(100), chunksize=7) as results:
            async for y in results:
                got.append(y)
                await results.aclose()

    with anyio.fail_after(HANG_GUARD), pytest.raises(anyio.ClosedResourceError):
        await take_and_close()
    assert got == [1]
    assert pool.statistics().busy == 0


async def test_async_for_and_anext_mixed_hand_out_every_result_once_in_order(
    pool: WorkerPool,
) -> None:
    # The results generator of each ``async for`` and ``__anext__`` step through the
    # same results at hand: a result is neither skipped nor handed out twice, whether
    # the switch comes within a chunk or at its end (chunks of 7).
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD):
        async with pool.map(mfuncs.triple_plus_one, range(60), chunksize=7) as results:
            async for y in results:
                got.append(y)
                if len(got) in (3, 7, 20):
                    got.append(await results.__anext__())
                if len(got) >= 25:
                    break
            got += [await results.__anext__() for _ in range(10)]
            got += [y async for y in results]
    assert got == expected(list(range(60)))


@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_an_error_raised_by_the_source_comes_out_as_it_is(
    pool: WorkerPool, kind: str
) -> None:
    error = LookupError("the source broke")

    def broken() -> Iterator[int]:
        yield from range(10)
        raise error

    async def broken_async() -> AsyncIterator[int]:
        for i in range(10):
            yield i
        raise error

    source = broken() if kind == "sync" else broken_async()
    got: list[int] = []
    with anyio.fail_after(HANG_GUARD), pytest.raises(LookupError) as caught:
        await collect(pool.map(mfuncs.triple_plus_one, source, chunksize=1), got)
    assert caught.value is error
    assert got == expected(list(range(len(got))))
    await wait_until_idle(pool)
    assert await pool.run_sync(funcs.echo, "fine") == "fine"


async def test_the_context_manager_hands_back_the_results_themselves(pool: WorkerPool) -> None:
    results = pool.map(mfuncs.triple_plus_one, [1, 2])
    async with results as entered:
        assert entered is results
        assert [y async for y in entered] == [4, 7]


# -- bad arguments and bad data -----------------------------------------------------------


@pytest.mark.parametrize(
    ("chunksize", "error"),
    [(0, ValueError), (-3, ValueError), ("x", TypeError), (2.5, TypeError)],
)
async def test_a_bad_chunksize_fails_at_once_without_a_worker(
    pool: WorkerPool, chunksize: Any, error: type[Exception]
) -> None:
    with pytest.raises(error, match="chunksize"):
        pool.map(mfuncs.triple_plus_one, [1, 2, 3], chunksize=chunksize)
    assert pool.statistics().started == 0


async def test_a_non_iterable_is_a_type_error_without_a_worker(pool: WorkerPool) -> None:
    not_iterable = cast("list[int]", 42)
    with pytest.raises(TypeError):
        await collect(pool.map(mfuncs.triple_plus_one, not_iterable), [])
    assert pool.statistics().started == 0


@pytest.mark.parametrize("chunksize", [1, 7])
async def test_an_argument_that_cannot_be_pickled_names_its_item(
    pool: WorkerPool, chunksize: int
) -> None:
    items: list[object] = [0, 1, 2, 3, 4, threading.Lock(), 6, 7, 8, 9]
    got: list[object] = []
    with anyio.fail_after(HANG_GUARD), pytest.raises(SerializationError) as caught:
        await collect(pool.map(funcs.echo, items, chunksize=chunksize), got)
    assert "item 5" in f"{caught.value} {notes_of(caught.value)}"
    # In input order, as builtin map: every item before the bad one, nothing after.
    assert got == [0, 1, 2, 3, 4]
    # A plain ``async for``: another chunk may still finish in the background.
    await wait_until_idle(pool)
    figures = pool.statistics()
    assert figures.broken == 0
    assert await pool.run_sync(funcs.echo, "fine") == "fine"
    assert pool.statistics().started == figures.started, "a worker was replaced"


@pytest.mark.parametrize("ordered", [True, False])
async def test_no_chunk_starts_on_a_worker_started_after_the_map_failed(
    tmp_path: Path, ordered: bool
) -> None:
    # Both lanes start a worker for their first chunk, and every item fails. The second
    # start is held until the caller has seen the first failure (which stops the map)
    # and ends with no checkpoint after that stop, as a start that completes in the
    # same pass of the event loop does. The lane must then hand that worker back
    # without sending its chunk: only the item that failed ever ran.
    async with WorkerPool(max_workers=2) as pool:
        held = HeldStart(pool, nth=2)
        items = [(str(tmp_path), i) for i in range(2)]
        results = pool.map(mfuncs.recorded_failure, items, chunksize=1, ordered=ordered)
        with anyio.fail_after(HANG_GUARD):
            got: list[int] = []
            with pytest.raises(ValueError, match="fails"):
                await collect(results, got)
            assert got == []
            assert held.count == 2, "the second lane did not start a worker"
            held.release()
            await results.aclose()  # returns once nothing of the map runs
        assert len(names(tmp_path, "started")) == 1, "a chunk began after the map failed"
        figures = pool.statistics()
        assert figures.busy == 0
        assert figures.broken == 0


async def test_a_result_that_cannot_be_pickled_keeps_the_worker(pool: WorkerPool) -> None:
    got: list[object] = []
    results = pool.map(mfuncs.lock_result_on, [(i, 3) for i in range(10)], chunksize=1)
    with anyio.fail_after(HANG_GUARD), pytest.raises(SerializationError):
        await collect_in_block(results, got)
    assert got == [0, 1, 2]
    figures = pool.statistics()
    assert figures.broken == 0
    assert figures.busy == 0
    assert await pool.run_sync(funcs.echo, "fine") == "fine"
    assert pool.statistics().started == figures.started, "the worker did not survive"


@pytest.mark.parametrize("kind", ["list", "generator"])
async def test_automatic_chunks_stay_under_the_frame_limit(kind: str) -> None:
    # Each item fits in a frame on its own, so a map that chooses its own chunks must
    # not fail for a chunk it made too big.
    items = [bytes([i % 256]) * 400 for i in range(300)]
    source = items if kind == "list" else iter(items)
    async with WorkerPool(max_workers=2, max_frame_length=1000) as pool:
        with anyio.fail_after(HANG_GUARD):
            got = [y async for y in pool.map(funcs.echo, source)]
        assert got == items
        assert pool.statistics().broken == 0


async def test_an_explicit_chunk_over_the_frame_limit_is_refused_clearly() -> None:
    items = [bytes([i % 256]) * 400 for i in range(30)]
    async with WorkerPool(max_workers=2, max_frame_length=1000) as pool:
        pids = {await pool.run_sync(mfuncs.pid) for _ in range(2)}
        with anyio.fail_after(HANG_GUARD), pytest.raises(SerializationError, match="frame limit"):
            await collect(pool.map(funcs.echo, items, chunksize=7), [])
        await wait_until_idle(pool)
        # Nothing reached a worker: the same workers take the next calls.
        assert await pool.run_sync(mfuncs.pid) in pids
        figures = pool.statistics()
        assert (figures.started, figures.broken) == (len(pids), 0)


@pytest.mark.procio_leak_check
@pytest.mark.parametrize("chunksize", [1, 7])
async def test_a_worker_killed_mid_map_breaks_only_that_map(chunksize: int) -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            with pytest.raises(BrokenWorkerProcess):
                async for _ in pool.map(
                    mfuncs.kill_self_on, [(i, 10) for i in range(40)], chunksize=chunksize
                ):
                    pass
            # A plain ``async for``: the other worker's chunk may still finish in the
            # background.
            await wait_until_idle(pool)
            assert await pool.run_sync(funcs.echo, "alive") == "alive"
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(30))]
        assert got == expected(list(range(30)))


@pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")
async def test_a_map_whose_next_worker_cannot_start_fails_cleanly() -> None:
    # One worker runs; the second cannot start for lack of descriptors. Each try must
    # end with every result right or with EMFILE, never a hang or a lost descriptor, and
    # the pool must go on once descriptors are available again.
    import errno
    import resource

    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=2, prestart=1) as pool:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        base = max(funcs.open_fds()) + 1
        outcomes: list[str] = []
        with anyio.fail_after(HANG_GUARD):
            for extra in range(40):
                resource.setrlimit(resource.RLIMIT_NOFILE, (base + extra, hard))
                try:
                    got = [y async for y in pool.map(mfuncs.sleep_then_pid, [0.05] * 6)]
                except OSError as exc:
                    assert exc.errno == errno.EMFILE, exc
                    outcomes.append("EMFILE")
                else:
                    assert len(got) == 6
                    outcomes.append("ran")
                finally:
                    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
                await wait_until_idle(pool)
                values = [y async for y in pool.map(mfuncs.triple_plus_one, range(20))]
                assert values == expected(list(range(20)))
                if pool.statistics().started == 2:
                    break
        assert outcomes[0] in {"EMFILE", "ran"}
        assert pool.statistics().started == 2, outcomes
        assert pool.statistics().broken == 0
    guard.check()


async def test_a_closed_pool_refuses_a_map() -> None:
    async with WorkerPool(max_workers=1) as pool:
        pass
    with pytest.raises(anyio.ClosedResourceError):
        async for _ in pool.map(mfuncs.triple_plus_one, [1]):
            pass
    async with WorkerPool(max_workers=1) as pool:
        await pool.aclose()
        with pytest.raises(anyio.ClosedResourceError):
            async for _ in pool.map(mfuncs.triple_plus_one, [1]):
                pass


async def test_a_pool_not_entered_refuses_a_map() -> None:
    pool = WorkerPool(max_workers=1)
    with pytest.raises(RuntimeError, match="context manager"):
        async for _ in pool.map(mfuncs.triple_plus_one, [1]):
            pass
    assert pool.statistics().started == 0


# -- figures, spread and company -----------------------------------------------------------


@pytest.mark.parametrize("source", ["list", "generator"])
async def test_progress_figures_count_up_to_the_total(pool: WorkerPool, source: str) -> None:
    xs = list(range(300))
    iterable = xs if source == "list" else (x for x in xs)
    seen = 0
    with anyio.fail_after(HANG_GUARD):
        async with pool.map(mfuncs.triple_plus_one, iterable, chunksize=7) as results:
            assert results.total == (300 if source == "list" else None)
            assert results.completed == 0
            async for _ in results:
                seen += 1
                assert results.submitted >= results.completed >= seen
                assert results.submitted <= 300
                assert results.chunksize == 7
    assert results.completed == results.submitted == 300
    assert results.total == (300 if source == "list" else None)
    assert results.failed_index is None


async def test_automatic_chunks_stay_small_for_a_short_list() -> None:
    # 40 items on 2 workers: automatic chunks never exceed 40 / (2 * 2) = 10.
    async with WorkerPool(max_workers=2) as pool:
        async with pool.map(mfuncs.triple_plus_one, list(range(40))) as results:
            sizes = set()
            async for _ in results:
                sizes.add(results.chunksize)
        assert sizes
        assert max(sizes) <= 10, f"chunk sizes reported: {sorted(sizes)}"


async def test_no_more_lanes_than_items() -> None:
    # A lane with nothing to take would cost a task and passes through the event loop.
    async with WorkerPool(max_workers=3) as pool:
        for xs, lanes in (([1], 1), ([1, 2], 2), (list(range(10)), 3), ([], 1)):
            async with pool.map(mfuncs.triple_plus_one, xs) as results:
                assert results.lanes == lanes, xs
                assert [y async for y in results] == expected(xs)
        # An input without a length may be of any size: one lane per worker.
        async with pool.map(mfuncs.triple_plus_one, (x for x in [1])) as results:
            assert results.lanes == 3
            assert [y async for y in results] == [4]


async def test_slow_items_run_on_both_workers() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            pids = [pid async for pid in pool.map(mfuncs.sleep_then_pid, [0.3] * 4)]
        assert len(set(pids)) == 2
        assert os.getpid() not in pids


async def test_run_sync_calls_beside_a_map_get_their_own_results(pool: WorkerPool) -> None:
    singles: dict[int, object] = {}
    with anyio.fail_after(HANG_GUARD):
        async with anyio.create_task_group() as tg:

            async def single(i: int) -> None:
                singles[i] = await pool.run_sync(funcs.echo, f"single {i}")

            for i in range(30):
                tg.start_soon(single, i)
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(2000), chunksize=3)]
    assert got == expected(list(range(2000)))
    assert singles == {i: f"single {i}" for i in range(30)}
