"""The benchmarks time an async sample inside its event loop.

The many-tasks benchmark's async contenders (procio, AnyIO, the ``async for`` bound) run
in an event loop kept in a thread, reached through a blocking portal. A call through
the portal hops into that thread and back, which costs about half a millisecond on a
small machine: the harness's cost, not the contender's, and a twentieth of a
20,000-item map. The time of such a sample must be what the work took in the loop; a
sync contender has no hop and is timed where it runs.

The text benchmark starts an event loop per sample (``anyio.run``): its start and its
closing are not the reader's work either, and the floor it is compared with has none.

The clock here is a fake one (the scripts' ``time``): a hop, a loop's start and a
contender's work each move it by a known amount, so the test says exactly which of
them was counted.
"""

from __future__ import annotations

import importlib
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_map: Any = importlib.import_module("bench_map")
bench_text: Any = importlib.import_module("bench_text")
harness: Any = importlib.import_module("_harness")

HOP = 0.5  # seconds on the fake clock for a hop into the loop's thread, each way
WORK = 0.25  # seconds on the fake clock for one sample of a faked async contender
TICK = 1e-9  # every reading of the fake clock moves it on a little: no sample takes 0 s


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def perf_counter(self) -> float:
        self.now += TICK
        return self.now


class _HoppingPortal:
    """A portal whose every call costs a hop each way on the fake clock."""

    def __init__(self, clock: _Clock) -> None:
        self._clock = clock

    def call(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        self._clock.now += HOP
        result = anyio.run(func, *args)
        self._clock.now += HOP
        return result


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> _Clock:
    clock = _Clock()
    # The scripts' own ``time``: the real module's functions, but a fake perf_counter.
    fake = {name: getattr(time, name) for name in dir(time) if not name.startswith("_")}
    fake["perf_counter"] = clock.perf_counter
    for script in (bench_map, bench_text, harness):
        monkeypatch.setattr(script, "time", SimpleNamespace(**fake))
    return clock


@pytest.fixture
def slow_loop_start(monkeypatch: pytest.MonkeyPatch, clock: _Clock) -> None:
    """bench_text's ``anyio.run`` costs HOP on the fake clock to open, and to close."""
    portal = _HoppingPortal(clock)
    fake = {name: getattr(anyio, name) for name in dir(anyio) if not name.startswith("_")}
    fake["run"] = portal.call
    monkeypatch.setattr(bench_text, "anyio", SimpleNamespace(**fake))


@pytest.fixture
def loop(clock: _Clock) -> Any:
    # A Loop with no thread and no pool: the faked contenders below need neither.
    loop = bench_map.Loop.__new__(bench_map.Loop)
    loop.portal = _HoppingPortal(clock)
    loop.pool = None
    return loop


def _working(clock: _Clock, result: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """A coroutine function that takes WORK on the fake clock and returns *result(...)*."""

    async def contender(*args: Any) -> Any:
        clock.now += WORK
        return result(*args)

    return contender


def _samples(rows: list[Any], name: str, figure: str | None = None) -> list[float]:
    (row,) = [row for row in rows if row.name == name and figure in (None, row.figure)]
    assert row.samples
    return list(row.samples)


def test_a_map_sample_is_timed_inside_the_loop(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock, loop: Any
) -> None:
    items = 8
    monkeypatch.setattr(bench_map, "_have", lambda module: False)  # no loky, no joblib
    monkeypatch.setattr(
        bench_map, "_procio_map", _working(clock, lambda pool, func, xs: [func(x) for x in xs])
    )
    monkeypatch.setattr(
        bench_map, "_anyio_map", _working(clock, lambda func, xs: [func(x) for x in xs])
    )
    monkeypatch.setattr(bench_map, "_async_for_bound", _working(clock, list))
    with bench_map.contextlib.ExitStack() as stack:
        rows = bench_map.map_tiny_rows(stack, loop, 3, items)
    for name in (
        "procio (asyncio): pool.map",
        "anyio.to_process (asyncio), CapacityLimiter(2)",
        "bound: async for over the same results, already in memory (no workers)",
    ):
        assert _samples(rows, name) == pytest.approx([items / WORK] * 3, rel=1e-6), name


def test_a_cpu_bound_sample_is_timed_inside_the_loop(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock, loop: Any
) -> None:
    calls, count = 2, 10
    monkeypatch.setattr(
        bench_map,
        "_procio_map",
        _working(clock, lambda pool, func, xs: [(bench_map.spin(x), 0.0) for x in xs]),
    )
    rows = bench_map.cpu_bound_rows(loop, 3, calls, count)
    assert _samples(rows, "procio (asyncio): pool.map", "cpu-bound") == pytest.approx(
        [WORK] * 3, rel=1e-6
    )


CPU = 0.125  # seconds of the parent's CPU, on a fake CPU clock, that a faked map takes


def test_the_parent_cpu_of_a_cpu_bound_map_is_counted_per_map(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock, loop: Any
) -> None:
    cpu_clock = _Clock()
    fake = dict(vars(bench_map.time))
    fake["process_time"] = cpu_clock.perf_counter
    monkeypatch.setattr(bench_map, "time", SimpleNamespace(**fake))

    async def procio_map(pool: Any, func: Any, xs: list[int]) -> list[Any]:
        clock.now += WORK
        cpu_clock.now += CPU
        return [(bench_map.spin(x), 0.0) for x in xs]

    monkeypatch.setattr(bench_map, "_procio_map", procio_map)
    rows = bench_map.cpu_bound_rows(loop, 3, 2, 10)
    # In milliseconds, the figure's unit; the hop into the loop takes no fake CPU.
    assert _samples(rows, "procio (asyncio): pool.map", "cpu-bound-parent") == pytest.approx(
        [CPU * 1e3] * 3, rel=1e-6
    )
    # The executor's maps take none of the fake CPU: each sample is its own map's.
    executor = _samples(rows, "ProcessPoolExecutor.map, chunksize=1", "cpu-bound-parent")
    assert executor == pytest.approx([0.0] * 3, abs=1e-3)


def test_a_stream_sample_is_timed_inside_the_loop(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock, loop: Any
) -> None:
    items = 16
    monkeypatch.setattr(
        bench_map, "_procio_stream", _working(clock, lambda pool, n: list(range(n)))
    )
    monkeypatch.setattr(bench_map, "_procio_list", _working(clock, lambda pool, n: list(range(n))))
    rows = bench_map.stream_rows(loop, 3, items)
    for name in (
        "procio (asyncio): pool.stream of a generator",
        "procio (asyncio): pool.run_sync returning a list",
    ):
        assert _samples(rows, name) == pytest.approx([items / WORK] * 3, rel=1e-6), name


@pytest.mark.usefixtures("slow_loop_start")
def test_a_decode_sample_is_timed_inside_its_event_loop(clock: _Clock) -> None:
    decode = _working(clock, lambda command: 1)
    assert bench_text._measure(decode, ["true"]) == pytest.approx(WORK, rel=1e-6)


@pytest.mark.usefixtures("slow_loop_start")
def test_a_long_line_sample_is_timed_inside_its_event_loop(
    monkeypatch: pytest.MonkeyPatch, clock: _Clock
) -> None:
    length = 1000
    monkeypatch.setattr(bench_text, "_one_long_line", _working(clock, lambda n: n))
    assert bench_text._long_line_ns_per_char(length) == pytest.approx(WORK / length * 1e9, rel=1e-6)
