"""How many workers a map keeps busy: as many as its caller can take results from.

Each map measures the CPU time its workers spent on its chunks and the time its caller
spent on the results (not waiting for them). When the workers' time is less than the
caller's, one worker makes results faster than the caller takes them, and a second lane
gains nothing; on a machine with as many CPUs as workers it only takes CPU from the
caller. The next map of the same function in the same pool then starts with as many
lanes as that measurement says it needs (workers' time over caller's time, rounded up),
and adds every other lane as soon as its caller waits much longer for results than it
spent on the last ones, or as soon as its worker and the event loop's thread spent much
of the time waiting for a CPU (they took turns on one CPU); the maps after such a one run
every lane for a while. The first map of a function uses every lane.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import WorkerPool
from procio_workers import _mapping as mapping_module
from procio_workers import _pool as pool_module
from procio_workers._channel import CAN_COUNT_UNREAD
from procio_workers._process_backend import ProcessBackend, ProcessWorker

try:
    import resource as resource_module
except ImportError:  # pragma: no cover - not POSIX
    resource_module = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

# The machine's real waits for a CPU are hidden from every test here (see no_cpu_waits in
# conftest): the tests of such waits fake them on top of that.
pytestmark = [pytest.mark.anyio, pytest.mark.usefixtures("no_cpu_waits")]

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45
#: How long a slow caller pauses per item: far longer than a worker spends on the item
#: (a sleep of 0 and a getpid), so the measurement puts the caller well behind one worker.
CALLER_PAUSE = 0.005

pipe_counted = pytest.mark.skipif(
    not CAN_COUNT_UNREAD, reason="how much waits in a pipe is told by Linux's FIONREAD"
)
measured_here = pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the workers' CPU time is read from Linux's /proc/<pid>/schedstat",
)


def _workers(pid: int | str | None) -> bool:
    return pid != pool_module.THIS_THREAD


def _wait_all_along(
    monkeypatch: pytest.MonkeyPatch, who: Callable[[int | str | None], bool]
) -> None:
    """Make the processes (or this thread) that *who* picks out seem to have waited for
    a CPU all the time that passed: the pool then sees them run by turns."""
    real = pool_module._cpu_seconds
    clock = time.perf_counter  # the pool's clock

    def waited_all_along(pid: int | str | None, fd: int = -1) -> tuple[float, float] | None:
        got = real(pid, fd)
        return got if got is None or not who(pid) else (got[0], clock())

    monkeypatch.setattr(pool_module, "_cpu_seconds", waited_all_along)


async def _slow_caller_map(
    pool: WorkerPool, count: int, func: Callable[[float], object] = mfuncs.sleep_then_pid
) -> tuple[set[object], int]:
    """Map instant calls of *func* (0 seconds each) with a caller slower than any worker.

    Returns the pids that ran them and the lanes the map started with.
    """
    pids: set[object] = set()
    async with pool.map(func, [0.0] * count) as results:
        started = results.running_lanes
        async for pid in results:
            pids.add(pid)
            await anyio.sleep(CALLER_PAUSE)
    return pids, started


async def _settle_on_one_lane(
    pool: WorkerPool, func: Callable[[float], object] = mfuncs.sleep_then_pid
) -> None:
    """Two maps of *func* with a slow caller: the first also pays for the workers' first
    import of the function's module, which the second does not; after it, one lane is
    measured."""
    for _ in range(2):
        await _slow_caller_map(pool, 40, func)


async def test_first_map_of_a_function_uses_every_lane() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            pids, started = await _slow_caller_map(pool, 40)
    assert started == 2
    assert len(pids) == 2, "the first map of a function runs on every worker"


@measured_here
async def test_a_caller_slower_than_one_worker_gets_one_lane_next_time() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            pids, started = await _slow_caller_map(pool, 40)
    assert started == 1
    assert len(pids) == 1, f"the caller was the bottleneck, yet {len(pids)} workers ran"


@measured_here
async def test_busy_workers_keep_every_lane() -> None:
    # Each call spins for 20 ms in its worker, and the caller takes the results at once:
    # the workers' time is many times the caller's, and the next map keeps both lanes.
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            for _ in range(2):
                async with pool.map(mfuncs.spin_then_pid, [0.02] * 8) as results:
                    started = results.running_lanes
                    pids = {pid async for pid in results}
    assert started == 2
    assert len(pids) == 2


@measured_here
@pytest.mark.parametrize("remembered", [None, 1e-6], ids=["as-measured", "far-faster"])
async def test_a_map_adds_its_lanes_when_the_caller_waits(remembered: float | None) -> None:
    # far-faster: the last map measured the function far faster than it now is (a tiny
    # time per item: the first chunks are cut to the full share of the input, not
    # ramped). The first answer finds the function 50 ms an item, and the next chunk
    # must be cut by that, not by the last map's estimate weighed as thousands of items:
    # cut by the estimate, it takes all the rest of the input, and the lane the caller
    # starts when it waits finds none.
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            if remembered is not None:
                pool._keep_per_item_estimate(mfuncs.sleep_then_pid, remembered)
            async with pool.map(mfuncs.sleep_then_pid, [0.05] * 12) as results:
                assert results.running_lanes == 1
                pids = {pid async for pid in results}
                grown = results.running_lanes
    assert grown == 2
    assert len(pids) == 2, "slow items left a worker idle: the lane came after the input"


@measured_here
async def test_a_caller_kept_waiting_by_its_lane_gets_the_others_while_it_waits(
    tmp_path: Path,
) -> None:
    # The lane's second item waits until the fourth has run, which only another lane
    # can run (the third is queued on the lane's own worker). Lanes added only once the
    # awaited answer comes would come too late: the item would give up waiting.
    released = str(tmp_path / "released")
    items: list[object] = [0.0, ("wait", released), 0.0, ("release", released)]
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool, mfuncs.sleep_wait_or_release)
            async with pool.map(mfuncs.sleep_wait_or_release, items, chunksize=1) as results:
                assert results.running_lanes == 1
                got = [result async for result in results]
    assert got[1] is True, "the caller waited for its one lane, and no other lane started"


async def test_no_result_is_lost_when_a_wait_for_lanes_runs_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The caller's wait for results is cut short at every turn, by deadlines of up to
    # 0.2 ms, while answers arrive at random times: a result that reached the wait just
    # as its deadline passed must not be dropped, in order or not, whatever the chunks.
    rng = random.Random(1729)
    monkeypatch.setattr(mapping_module._MapCore, "_starve_limit", lambda _: rng.uniform(0, 0.0002))
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            for _ in range(60):
                values = list(range(rng.randint(1, 40)))
                items = [(rng.uniform(0, 0.0005), value) for value in values]
                ordered = rng.random() < 0.5
                chunksize = rng.choice([None, 1, 3])
                got: list[object] = []
                async with pool.map(
                    mfuncs.sleep_then_echo, items, ordered=ordered, chunksize=chunksize
                ) as results:
                    async for value in results:
                        got.append(value)
                        if rng.random() < 0.3:
                            await anyio.sleep(rng.uniform(0, 0.0003))
                assert (got if ordered else sorted(got)) == values  # type: ignore[type-var]


@measured_here
async def test_lanes_remembered_per_function_and_per_pool() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            async with pool.map(mfuncs.triple_plus_one, range(40)) as results:
                assert results.running_lanes == 2  # another function: every lane
                assert [y async for y in results] == [3 * x + 1 for x in range(40)]
    async with (
        WorkerPool(max_workers=2) as other,
        other.map(mfuncs.sleep_then_pid, [0.0] * 4) as results,
    ):
        assert results.running_lanes == 2  # another pool: every lane
        assert len([y async for y in results]) == 4


@measured_here
async def test_a_map_left_early_is_not_remembered() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            # Busy workers and a caller that takes their results at once: both lanes.
            async with pool.map(mfuncs.spin_then_pid, [0.02] * 8) as results:
                assert len([pid async for pid in results]) == 8
            # A slow caller, which leaves after two results: kept, this measurement
            # would give the next map a single lane.
            async with pool.map(mfuncs.spin_then_pid, [0.0] * 40) as results:
                async for _ in results:
                    await anyio.sleep(CALLER_PAUSE)
                    if results.completed >= 2:
                        break
            async with pool.map(mfuncs.spin_then_pid, [0.0] * 4) as results:
                started = results.running_lanes
                assert len([pid async for pid in results]) == 4
    assert started == 2, "a map left early measured too little to go by"


@measured_here
async def test_a_lane_added_late_is_stopped_by_leaving_early() -> None:
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            async with pool.map(mfuncs.sleep_then_pid, [0.05] * 40) as results:
                seen = 0
                async for _ in results:
                    seen += 1
                    if results.running_lanes == 2 and seen >= 4:
                        break
            assert results.running_lanes == 2
            assert results.completed < 40
            # The pool is whole and idle: both workers take the next calls.
            stats = pool.statistics()
            assert stats.busy == 0, stats
            assert await pool.run_sync(mfuncs.triple_plus_one, 2) == 7


@pipe_counted
async def test_a_worker_tells_whether_an_answer_has_arrived() -> None:
    # A caller that waits while an answer already sits in the pipe (its lane simply has
    # not run to read it) is not waiting for too few lanes: the worker says so.
    async with ProcessBackend() as backend:
        worker = await backend.start_worker({})
        assert isinstance(worker, ProcessWorker)
        try:
            with anyio.fail_after(HANG_GUARD):
                await worker.send_batch(backend.prepare_batch(mfuncs.sleep_then_pid, [(0.3,)]))
                assert not worker.answer_arrived(), "the batch is still running"
                await worker.wait_for_answer()
                await anyio.sleep(0.05)  # the rest of the answer, if it came in pieces
                assert worker.answer_arrived()
                assert await worker.receive_batch() == [worker.pid]
                assert not worker.answer_arrived(), "the answer was read"
        finally:
            worker.kill()
            await worker.aclose()


def _this_thread(pid: int | str | None) -> bool:
    return pid == pool_module.THIS_THREAD


@measured_here
@pytest.mark.parametrize(
    "kept_waiting",
    [
        pytest.param(_workers, id="the worker"),
        # The worker runs a chunk queued behind the last while the loop has results to
        # take: the one kept waiting is the event loop's thread.
        pytest.param(_this_thread, id="the event loop"),
    ],
)
async def test_a_map_run_by_turns_with_its_loop_brings_every_lane_at_once(
    monkeypatch: pytest.MonkeyPatch, kept_waiting: Callable[[int | str | None], bool]
) -> None:
    # A scheduler that packs the event loop and the one worker onto one CPU runs them by
    # turns: each then waits for a CPU while the other runs. Seen on a chunk's answer,
    # the map starts its other lanes there and then, which makes the machine use more
    # CPUs.
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            _wait_all_along(monkeypatch, kept_waiting)
            pids, by_turns = await _slow_caller_map(pool, 40)
    assert by_turns == 1
    assert len(pids) == 2, "the map went on with one worker, run by turns with the loop"


@measured_here
async def test_a_lone_lane_run_by_turns_steps_back_for_a_worker_elsewhere(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the lone lane's worker shares the loop's CPU: the other lane takes over the
    # map, and the lane run by turns takes no chunk after the ones already under way.
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            packed = pool._idle[-1].worker.pid  # the worker the pool hands out first
            _wait_all_along(monkeypatch, lambda pid: pid == packed)
            order: list[int] = []
            async with pool.map(mfuncs.sleep_then_pid, [0.0] * 40) as results:
                async for pid in results:
                    order.append(pid)
                    await anyio.sleep(CALLER_PAUSE)
                lanes_at_end = results.running_lanes
    assert order[0] == packed
    taken_over = order.index(next(pid for pid in order if pid != packed))
    assert packed not in order[taken_over:], f"the packed worker ran on: {order}"
    assert lanes_at_end == 1


@measured_here
async def test_maps_after_one_run_by_turns_run_every_lane_for_a_while_then_try_fewer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Packing may last (a map started on a packed worker gains little from the lanes it
    # adds late), or it may pass (the scheduler moves one of the two elsewhere). So the
    # maps after one run by turns run every lane from their start, for a while, and then
    # fewer lanes are tried again: after 2 maps the first time, twice as many each time
    # the try runs by turns too, and after 2 again once one runs side by side.
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)

            async def started_with(packed: bool) -> int:
                with monkeypatch.context() as patch:
                    if packed:
                        _wait_all_along(patch, _workers)
                    _, started = await _slow_caller_map(pool, 40)
                return started

            by_turns = [await started_with(packed=True) for _ in range(4)]
            after = [await started_with(packed=False) for _ in range(7)]
            by_turns_again = [await started_with(packed=True) for _ in range(4)]
    # A map of one lane run by turns, 2 maps of every lane, a try run by turns again.
    assert by_turns == [1, 2, 2, 1], "a map run by turns changed nothing after it"
    # Then 4 maps of every lane, a try that runs side by side, and one lane from there on.
    assert after == [2, 2, 2, 2, 1, 1, 1]
    # Once one ran side by side, the maps of every lane after a map run by turns are 2.
    assert by_turns_again == [1, 2, 2, 1]


async def test_workers_whose_cpu_time_is_unknown_keep_every_lane(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Without the workers' CPU time (a system or a backend that does not tell), there is
    # nothing to go by: every map runs every lane, as the first one does.
    monkeypatch.setattr(pool_module, "_cpu_seconds", lambda pid, fd=-1: None)
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            await _settle_on_one_lane(pool)
            pids, started = await _slow_caller_map(pool, 40)
    assert started == 2
    assert len(pids) == 2


@pipe_counted
@pytest.mark.skipif(not hasattr(resource_module, "RLIMIT_NOFILE"), reason="POSIX only")
async def test_answer_arrived_with_descriptors_above_1023() -> None:
    # The worker's pipes get descriptors above select()'s limit: the look at the pipe
    # must still work (select(), say, would raise ValueError there).
    soft, hard = resource_module.getrlimit(resource_module.RLIMIT_NOFILE)
    wanted = 1200
    if hard != resource_module.RLIM_INFINITY and hard < wanted:
        pytest.skip(f"the hard limit on open files ({hard}) is below {wanted}")
    resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (max(soft, wanted), hard))
    fillers: list[int] = []
    try:
        while not fillers or fillers[-1] < 1030:
            fillers.append(os.open(os.devnull, os.O_RDONLY))
        async with ProcessBackend() as backend:
            worker = await backend.start_worker({})
            assert isinstance(worker, ProcessWorker)
            try:
                assert worker._channel.response.fd > 1023
                with anyio.fail_after(HANG_GUARD):
                    await worker.send_batch(backend.prepare_batch(mfuncs.sleep_then_pid, [(0,)]))
                    await worker.wait_for_answer()
                    await anyio.sleep(0.05)
                    assert worker.answer_arrived()
                    assert await worker.receive_batch() == [worker.pid]
            finally:
                worker.kill()
                await worker.aclose()
    finally:
        for fd in fillers:
            os.close(fd)
        resource_module.setrlimit(resource_module.RLIMIT_NOFILE, (soft, hard))


def _open_cpu_time_files() -> int:
    """How many ``schedstat`` files of /proc this process holds open."""
    count = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # closed meanwhile (the listing's own descriptor)
        count += target.endswith("/schedstat")
    return count


async def drain(results: AsyncIterator[object]) -> None:
    async for _ in results:
        pass


@measured_here
async def test_a_lane_holds_its_cpu_time_files_only_while_it_holds_a_worker() -> None:
    # Read at every answer, the worker's and the loop's CPU times come from files held
    # open while the lane holds its worker (two per lane), and closed with it: after a
    # map that ran to its end, one left by break, one cancelled, and one whose worker
    # died under it.
    from procio_workers import BrokenWorkerProcess

    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.sleep_then_pid, [0.01] * 40) as results:
                held = []
                async for _ in results:
                    held.append(_open_cpu_time_files())
            assert _open_cpu_time_files() == 0
            # Every result until the last chunks came with both lanes holding a worker.
            assert max(held) == 4, held
            async with pool.map(mfuncs.sleep_then_pid, [0.01] * 40) as results:
                async for _ in results:
                    break
            assert _open_cpu_time_files() == 0
            with anyio.move_on_after(0.05):
                async with pool.map(mfuncs.sleep_then_pid, [0.01] * 40) as results:
                    async for _ in results:
                        pass
            assert _open_cpu_time_files() == 0
            killed = pool.map(mfuncs.kill_self_on, [(x, 7) for x in range(40)])
            async with killed:
                with pytest.raises(BrokenWorkerProcess):
                    await drain(killed)
            assert _open_cpu_time_files() == 0
            assert await pool.run_sync(mfuncs.triple_plus_one, 2) == 7
    assert _open_cpu_time_files() == 0
