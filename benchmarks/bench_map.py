"""Many tasks: procio's ``WorkerPool.map`` and ``WorkerPool.stream`` beside other pools.

    python benchmarks/bench_map.py [--quick] [--json PATH] [--map-tiny-only]

Every contender keeps two workers. Each pool or executor is created and warmed (one
untimed run of the very sample it is timed on) before anything is timed, for every
contender alike; then the figures are sampled in interleaved rounds (see ``_harness``),
the map's slowest contenders (joblib, AnyIO) in rounds of their own after the others.
procio and AnyIO keep their event loop (asyncio) running in a thread (an AnyIO blocking
portal), and a whole sample runs inside that loop and is timed there, without the hop
into that thread and back (see :meth:`Loop.timed`).

Figures (section ``many-tasks``):

- ``map-tiny``: 20,000 calls of ``f(x) = x + 1``, items per second: procio's
  ``pool.map`` with its default (automatic) chunk size and lanes (how many of its two
  workers a map keeps busy, chosen from what the map before it measured);
  ``ProcessPoolExecutor.map`` and
  loky's reusable executor's ``map``, both with ``chunksize = 20,000 // (4 x 2)``;
  ``joblib.Parallel(n_jobs=2, batch_size="auto")`` on its loky backend; AnyIO's
  ``to_process.run_sync``, one task per item in a task group, under a
  ``CapacityLimiter(2)``. Every contender's results are checked. Beside them, a bound
  that is no contender: the same 20,000 results, already in memory, stepped with
  ``async for`` as a caller steps procio's on this Python (an async generator before
  3.12, a coroutine of ``__anext__`` from 3.12 on); no async map can hand out its
  results faster. With ``--map-tiny-only`` (for a second Python version) only these
  rows are measured, as the figure ``map-tiny-pyX.Y``, with the contenders that
  interpreter has installed.
- ``cpu-bound``: 64 calls of a pure-Python loop that takes about 10 ms here (its count
  calibrated once at start, the same count for everyone): the elapsed time of procio's
  ``pool.map`` and of ``ProcessPoolExecutor.map`` (chunksize 1), beside the ideal: half
  the sum of the task times, each task's time being the CPU time its loop took in the
  worker, in procio's very run (:func:`spin_timed` measures it). That ideal is what a
  pool that never leaves a worker idle nor takes CPU from it would reach in that run,
  at whatever speed the machine ran then; this machine's speed swings from one second
  to the next, so an ideal measured at another moment says more about the
  machine than about the pool. That other ideal is shown too (the single-call times
  measured one after the other in this process, in the same round, halved), and so is
  what the machine gives two bare processes that split the same calls without a pool
  (no pickling, no scheduling).
- ``cpu-bound-parent``: the parent's own CPU time over each of those maps, procio's
  beside ``ProcessPoolExecutor``'s: with two workers on two CPUs, what the parent
  spends is taken from the workers.
- ``stream``: a generator yielding 100,000 small ints in the worker, read with procio's
  ``pool.stream``, beside the same data returned as one list by ``pool.run_sync``:
  items per second.

The functions the workers run are defined here, and picked from this module imported
by its name (``bench_map``), never as ``__main__``: so each library's workers import
them by name (the benchmarks folder is on ``sys.path``, which every library here hands
to its workers).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import importlib
import importlib.util
import os
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.from_thread
import anyio.to_process
from _harness import Row, parser, report, rounds, rounds_in_groups, timed_in_loop
from procio_workers import WorkerPool

WORKERS = 2
SECTION = "many-tasks"
CPU_CALL_SECONDS = 0.010

T = TypeVar("T")
PY = f"{sys.version_info[0]}.{sys.version_info[1]}"


# -- what the workers run ---------------------------------------------------------------


def add_one(x: int) -> int:
    """``f(x) = x + 1``: next to no work, so that the per-item cost is all there is."""
    return x + 1


def spin(count: int) -> int:
    """A pure-Python loop of *count* steps (CPU-bound, holds the GIL throughout)."""
    total = 0
    for i in range(count):
        total += i ^ (i >> 3)
    return total


def count_up(n: int) -> Iterator[int]:
    """A generator yielding ``0, 1, ..., n - 1``, one item at a time."""
    yield from range(n)


def count_list(n: int) -> list[int]:
    """The same items as :func:`count_up`, returned as one list."""
    return list(range(n))


# -- calibration ------------------------------------------------------------------------


def spin_timed(count: int) -> tuple[int, float]:
    """:func:`spin`, and the CPU seconds it took in the thread that ran it."""
    start = time.thread_time()
    total = spin(count)
    return total, time.thread_time() - start


def calibrate_spin(seconds: float) -> int:
    """The count of :func:`spin` that takes about *seconds* here (median of 5 runs)."""
    count = 10_000
    for _ in range(3):
        took = []
        for _ in range(5):
            start = time.perf_counter()
            spin(count)
            took.append(time.perf_counter() - start)
        count = max(1, round(count * seconds / max(statistics.median(took), 1e-9)))
    return count


# -- contenders -------------------------------------------------------------------------


class Loop:
    """An event loop running in its own thread, with procio's pool of two workers open."""

    def __init__(self, stack: contextlib.ExitStack) -> None:
        self.portal = stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))
        self.pool: WorkerPool = stack.enter_context(
            self.portal.wrap_async_context_manager(WorkerPool(max_workers=WORKERS))
        )

    def timed(self, func: Callable[..., Awaitable[T]], *args: Any) -> tuple[T, float]:
        """Await ``func(*args)`` in the loop: its result, and the seconds it took there.

        The time is taken inside the loop. The hop from this thread into the loop's
        and back (the portal's round trip, about half a millisecond on a small machine)
        is the harness's, not the contender's: a caller in an async program awaits the
        map where it is, and a map of 20,000 tiny calls lasts only some milliseconds.
        """
        timed: tuple[T, float] = self.portal.call(timed_in_loop, func, *args)
        return timed


def _timed_here(func: Callable[[], T]) -> tuple[T, float]:
    """Call *func* in this thread (a sync contender): its result and the seconds it took."""
    start = time.perf_counter()
    result = func()
    return result, time.perf_counter() - start


async def _procio_map(pool: WorkerPool, func: Callable[[int], T], xs: Sequence[int]) -> list[T]:
    async with pool.map(func, xs) as results:
        return [y async for y in results]


async def _ready_results(results: list[int]) -> AsyncIterator[int]:
    for result in results:
        yield result


class _ReadyResults:
    """Results at hand, each handed out by a coroutine of ``__anext__``."""

    def __init__(self, results: list[int]) -> None:
        self._at_hand = iter(results)

    def __aiter__(self) -> _ReadyResults:
        return self

    async def __anext__(self) -> int:
        for result in self._at_hand:
            return result
        raise StopAsyncIteration


async def _async_for_bound(results: list[int]) -> list[int]:
    # Stepped as procio's results are on this Python: an async generator before 3.12,
    # a coroutine of ``__anext__`` from 3.12 on (each the cheaper there).
    if sys.version_info >= (3, 12):
        return [y async for y in _ReadyResults(results)]
    return [y async for y in _ready_results(results)]


async def _anyio_map(func: Callable[[int], int], xs: Sequence[int]) -> list[int]:
    limiter = anyio.CapacityLimiter(WORKERS)
    out = [0] * len(xs)

    async def one(index: int, x: int) -> None:
        out[index] = await anyio.to_process.run_sync(func, x, limiter=limiter)

    async with anyio.create_task_group() as tg:
        for index, x in enumerate(xs):
            tg.start_soon(one, index, x)
    return out


async def _procio_stream(pool: WorkerPool, n: int) -> list[int]:
    async with pool.stream(count_up, n) as items:
        return [item async for item in items]


async def _procio_list(pool: WorkerPool, n: int) -> list[int]:
    return await pool.run_sync(count_list, n)


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


MAP_NOTE = (
    "Every pool or executor is created and warmed (one untimed run of the same map) "
    "before the timed part, for every contender alike. ProcessPoolExecutor and loky "
    'map with chunksize = items // (4 x 2); joblib with batch_size="auto" on its '
    "loky backend; AnyIO with one to_process.run_sync per item in a task group under "
    "a CapacityLimiter(2); procio with its default (automatic) chunk size and lanes "
    "(each map of a function runs as many of the workers as the map before it measured "
    "that the event loop could keep busy; see the many-tasks page). "
    "The bound is no contender: the same results, already in memory, stepped with "
    "async for as procio's are; no async map can pass it. "
    "joblib's and AnyIO's samples, which last many times longer, are taken in rounds "
    "of their own after the others': a sample taken right after one of theirs ran "
    "slower for the executors than for procio. "
    "Ratio: to the best of the other contenders (by median), per round (for joblib and "
    "AnyIO, their samples paired with the reference's in order)."
)
CPU_NOTE = (
    "A pure-Python loop calibrated once at start to about 10 ms on this machine, the "
    "same count for every contender. The ideal (the reference) is half the sum of the "
    "task times of procio's run beside it: each task's time is the CPU time its loop "
    "took in the worker (time.thread_time), so the ideal moves with the speed the "
    "machine had during that very run, and the ratio is what the pool adds: a worker "
    "left idle, or CPU taken from it. The serial ideal is the sum of the single-call "
    "times measured one after the other in the parent in the same round, halved: it "
    "was taken at another moment, and shows how far this machine's speed swings. "
    "Ratio: to the ideal of procio's run, per round."
)
PARENT_NOTE = (
    "The CPU time of the parent process, all its threads, over each timed map of the "
    "elapsed rows above (time.process_time, which leaves the workers out). On a machine "
    "with as many CPUs as workers, it is taken from the workers' share: each wake-up of "
    "the parent for an answer runs on a CPU that a worker computes on. procio's count "
    "includes the harness's hop into the event loop's thread and back. Ratio: to "
    "ProcessPoolExecutor's, per round."
)
BARE_NOTE = (
    "What this machine gives two CPU-bound processes at once: two Python processes, "
    "started and warmed before the clock, each told (one byte on a pipe) to run its "
    "half of the same calls and to answer with one byte when done; no pool, no "
    "pickling, no scheduling. Where it is slower than the serial ideal, this machine "
    "ran two such processes slower than it ran the calls one at a time in that round, "
    "whatever the pool."
)
STREAM_NOTE = (
    "Both in procio's warm pool. Ratio: to the same items returned as one list by "
    "run_sync, per round."
)


class BareProcesses:
    """Two plain Python processes that each run :func:`spin` *calls* times per go.

    They import this module by name and wait on their stdin; :meth:`run` tells both to
    go at once (``g``) and returns the elapsed seconds until both have answered;
    :meth:`close` tells them to quit (``q``).
    """

    def __init__(self, calls: int, count: int) -> None:
        program = (
            "import sys\n"
            "from bench_map import spin\n"
            "while sys.stdin.buffer.read(1) == b'g':\n"
            f"    for _ in range({calls}):\n"
            f"        spin({count})\n"
            "    sys.stdout.buffer.write(b'.')\n"
            "    sys.stdout.buffer.flush()\n"
        )
        here = str(Path(__file__).resolve().parent)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")])),
        }
        self.children = [
            subprocess.Popen(
                [sys.executable, "-c", program],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            for _ in range(WORKERS)
        ]

    def run(self) -> float:
        start = time.perf_counter()
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(b"g")
            child.stdin.flush()
        for child in self.children:
            assert child.stdout is not None
            if child.stdout.read(1) != b".":
                raise RuntimeError("a bare process ended early")
        return time.perf_counter() - start

    def close(self) -> None:
        # An explicit word, not the end of the pipe: a pool forked after these were
        # started holds copies of their pipes, so closing ours ends nothing.
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(b"q")
            child.stdin.close()
        for child in self.children:
            child.wait()
            assert child.stdout is not None
            child.stdout.close()


def map_tiny_rows(
    stack: contextlib.ExitStack, loop: Loop, repeats: int, items: int, figure: str = "map-tiny"
) -> list[Row]:
    xs = list(range(items))
    expected = [x + 1 for x in xs]
    chunksize = max(1, items // (4 * WORKERS))
    # Each sample gives its results and the seconds they took (see Loop.timed).
    samples: dict[str, Callable[[], tuple[list[int], float]]] = {
        "procio (asyncio): pool.map": lambda: loop.timed(_procio_map, loop.pool, add_one, xs),
    }
    roles = {"procio (asyncio): pool.map": "subject"}
    # Contenders whose samples last many times longer than the others': sampled
    # in rounds of their own, after the others (see rounds_in_groups). Among the
    # others, a sample that followed AnyIO's (20,000 tasks in the loop for seconds) or
    # joblib's was slower for the executors than for procio, which raised procio's
    # ratio to them.
    slow: list[str] = []

    executor = stack.enter_context(concurrent.futures.ProcessPoolExecutor(WORKERS))
    samples["ProcessPoolExecutor.map"] = lambda: _timed_here(
        lambda: list(executor.map(add_one, xs, chunksize=chunksize))
    )
    if _have("loky"):
        loky: Any = importlib.import_module("loky")
        reusable = loky.get_reusable_executor(max_workers=WORKERS)
        stack.callback(reusable.shutdown, wait=True)
        samples["loky reusable executor .map"] = lambda: _timed_here(
            lambda: list(reusable.map(add_one, xs, chunksize=chunksize))
        )
    if _have("joblib"):
        joblib: Any = importlib.import_module("joblib")
        parallel = stack.enter_context(
            joblib.Parallel(n_jobs=WORKERS, batch_size="auto", backend="loky")
        )
        joblib_name = 'joblib.Parallel (loky, batch_size="auto")'
        samples[joblib_name] = lambda: _timed_here(
            lambda: list(parallel(joblib.delayed(add_one)(x) for x in xs))
        )
        slow.append(joblib_name)
    anyio_name = "anyio.to_process (asyncio), CapacityLimiter(2)"
    samples[anyio_name] = lambda: loop.timed(_anyio_map, add_one, xs)
    roles[anyio_name] = "anyio"
    slow.append(anyio_name)
    # Not a contender: what handing the results out through ``async for`` costs alone,
    # a bound no async map (whose caller steps its results so) can pass.
    bound_name = "bound: async for over the same results, already in memory (no workers)"
    samples[bound_name] = lambda: loop.timed(_async_for_bound, expected)
    roles[bound_name] = "floor-2"

    title = f"map of {items:,} calls f(x) = x + 1, 2 workers"
    if figure != "map-tiny":
        title += f", Python {PY}"
    rows = {
        name: Row(
            figure,
            title,
            SECTION,
            name,
            roles.get(name, "other"),
            "items/s",
            higher_is_better=True,
        )
        for name in samples
    }
    rows["procio (asyncio): pool.map"].note = (
        MAP_NOTE
        if figure == "map-tiny"
        else (
            f"The same map on Python {PY}, with the contenders installed in that "
            "interpreter's environment. The bound is stepped as procio's results are "
            "there (a coroutine of __anext__ from Python 3.12 on, an async generator "
            "before). Ratio: as above."
        )
    )
    for name, sample in samples.items():  # warm up: workers started, code imported
        assert sample()[0] == expected, name
    fast = [name for name in samples if name not in slow]
    for _, name in rounds_in_groups(repeats, [fast, slow]):
        got, took = samples[name]()
        assert got == expected, name
        rows[name].samples.append(items / took)
    return list(rows.values())


def cpu_bound_rows(loop: Loop, repeats: int, calls: int, count: int) -> list[Row]:
    xs = [count] * calls
    expected = [spin(count)] * calls

    def serial_ideal() -> float:
        took = 0.0
        for x in xs:
            start = time.perf_counter()
            spin(x)
            took += time.perf_counter() - start
        return took / WORKERS

    executor = concurrent.futures.ProcessPoolExecutor(WORKERS)
    bare = BareProcesses(calls // WORKERS, count)
    procio_name = "procio (asyncio): pool.map"
    executor_name = "ProcessPoolExecutor.map, chunksize=1"
    try:
        timed: dict[str, Callable[[], tuple[list[tuple[int, float]], float]]] = {
            procio_name: lambda: loop.timed(_procio_map, loop.pool, spin_timed, xs),
            executor_name: lambda: _timed_here(
                lambda: list(executor.map(spin_timed, xs, chunksize=1))
            ),
        }
        title = f"{calls} calls of a ~10 ms pure-Python loop, 2 workers: elapsed"
        ideal_name = "ideal: half the task times (CPU) of procio's run"
        serial_name = "serial ideal: sum of single-call times / 2"
        bare_name = f"two bare processes, {calls // WORKERS} calls each, no pool"
        rows = {
            name: Row("cpu-bound", title, SECTION, name, role, "s", higher_is_better=False)
            for name, role in (
                (procio_name, "subject"),
                (executor_name, "other"),
                (bare_name, "other"),
                (ideal_name, "floor"),
                (serial_name, "floor-2"),
            )
        }
        rows[ideal_name].note = CPU_NOTE
        rows[bare_name].note = BARE_NOTE
        parent_title = f"{calls} calls of a ~10 ms pure-Python loop, 2 workers: parent's CPU"
        parent = {
            name: Row(
                "cpu-bound-parent", parent_title, SECTION, name, role, "ms", higher_is_better=False
            )
            for name, role in ((procio_name, "subject"), (executor_name, "other"))
        }
        parent[procio_name].note = PARENT_NOTE
        for name, sample in timed.items():
            assert [total for total, _ in sample()[0]] == expected, name
        bare.run()
        for _, name in rounds(repeats, [*timed, bare_name, serial_name]):
            if name == serial_name:
                rows[name].samples.append(serial_ideal())
                continue
            if name == bare_name:
                rows[name].samples.append(bare.run())
                continue
            cpu = time.process_time()
            got, took = timed[name]()
            parent[name].samples.append((time.process_time() - cpu) * 1e3)
            rows[name].samples.append(took)
            assert [total for total, _ in got] == expected, name
            if name == procio_name:
                rows[ideal_name].samples.append(sum(cpu for _, cpu in got) / WORKERS)
    finally:
        bare.close()
        executor.shutdown()
    return [*rows.values(), *parent.values()]


def stream_rows(loop: Loop, repeats: int, items: int) -> list[Row]:
    expected = list(range(items))
    samples: dict[str, Callable[[], tuple[list[int], float]]] = {
        "procio (asyncio): pool.stream of a generator": lambda: loop.timed(
            _procio_stream, loop.pool, items
        ),
        "procio (asyncio): pool.run_sync returning a list": lambda: loop.timed(
            _procio_list, loop.pool, items
        ),
    }
    title = f"{items:,} small ints from a worker"
    rows = {
        name: Row("stream", title, SECTION, name, role, "items/s", higher_is_better=True)
        for name, role in zip(samples, ("subject", "other"), strict=True)
    }
    rows["procio (asyncio): pool.stream of a generator"].note = STREAM_NOTE
    for name, sample in samples.items():
        assert sample()[0] == expected, name
    for _, name in rounds(repeats, list(samples)):
        got, took = samples[name]()
        assert got == expected, name
        rows[name].samples.append(items / took)
    return list(rows.values())


def main() -> None:
    p = parser(__doc__ or "")
    p.add_argument(
        "--map-tiny-only",
        action="store_true",
        help="only the map of tiny calls, named for this Python (for a second version)",
    )
    args = p.parse_args()
    if args.quick:
        repeats, items, cpu_calls, stream_items = 2, 2_000, 8, 10_000
    else:
        repeats, items, cpu_calls, stream_items = 7, 20_000, 64, 100_000
    rows: list[Row] = []
    if args.map_tiny_only:
        with contextlib.ExitStack() as stack:
            rows += map_tiny_rows(stack, Loop(stack), repeats, items, f"map-tiny-py{PY}")
        report(rows, args.json)
        return
    count = calibrate_spin(CPU_CALL_SECONDS)
    with contextlib.ExitStack() as stack:
        loop = Loop(stack)
        rows += map_tiny_rows(stack, loop, repeats, items)
        rows += cpu_bound_rows(loop, repeats, cpu_calls, count)
        rows += stream_rows(loop, repeats, stream_items)
    report(rows, args.json)


if __name__ == "__main__":
    # Run as a script, this file is ``__main__``: run it as the module ``bench_map``
    # instead, so that the functions handed to workers are pickled by that name.
    importlib.import_module("bench_map").main()
