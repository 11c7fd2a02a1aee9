"""Benchmarks of the worker layer: procio beside AnyIO, the floor and other pools, in one run.

    python benchmarks/bench_workers.py [--quick] [--json PATH]

Rows (the function is ``copy.copy``, which returns ints and ``bytes`` as they are, so it
is ``f(x) = x`` and importable by every library):

- worker round trip ``f(x) = x``, sequential: calls per second on one warm worker. The
  floor is a pipe ping-pong between two plain processes: a 4-byte length, then
  ``pickle.dumps((f, args))`` one way and the pickled result back, blocking reads.
- 32 MiB ``bytes`` echoed: the argument goes to a warm worker and comes back; MB/s is
  32 MiB divided by the round-trip time (one direction's size).
- cold start to first result: inside one already-running process, the time from opening
  a fresh event loop (or executor) to the first result, pool start included; each sample
  starts from nothing, since every library's default pool belongs to its event loop or
  executor. Lower is better.
- calls per second with 8 concurrent callers, each making sequential calls, on each
  library's default number of workers (one per CPU).

procio and AnyIO run on asyncio through ``anyio.run``; procio also gets a Trio row.
trio-parallel, loky and ``concurrent.futures.ProcessPoolExecutor`` rows appear when
they are installed (the ``bench`` hatch environment has them).
"""

from __future__ import annotations

import concurrent.futures
import copy
import importlib.util
import os
import pickle
import struct
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.to_process
from procio_workers import to_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Row, parser, report

ROUND_TRIP = "worker round trip f(x) = x, sequential"
ECHO = "worker 32 MiB bytes echoed"
COLD = "worker cold start to first result"
CONCURRENT = "worker calls/s, 8 concurrent callers"
MiB = 1024 * 1024
CALLERS = 8

func = copy.copy


def _more(group: str, name: str, value: float, unit: str, role: str = "other") -> Row:
    """A row where a larger value is better (a throughput)."""
    return Row(group, name, value, unit, higher_is_better=True, role=role)


def _less(group: str, name: str, value: float, unit: str, role: str = "other") -> Row:
    """A row where a smaller value is better (a time)."""
    return Row(group, name, value, unit, higher_is_better=False, role=role)


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# -- the floor: pipe ping-pong with pickle ----------------------------------------------

PING_PONG_CHILD = r"""
import os, pickle, struct
def read_exact(n):
    parts = []
    while n:
        chunk = os.read(0, n)
        if not chunk:
            raise SystemExit(0)
        parts.append(chunk)
        n -= len(chunk)
    return b"".join(parts)
while True:
    (size,) = struct.unpack(">I", read_exact(4))
    f, args = pickle.loads(read_exact(size))
    reply = pickle.dumps(f(*args), 5)
    os.write(1, struct.pack(">I", len(reply)) + reply)
"""


def floor_round_trip(calls: int) -> float:
    """Return calls per second of a blocking pipe ping-pong with pickle."""
    child = subprocess.Popen(
        [sys.executable, "-c", PING_PONG_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE
    )
    assert child.stdin is not None
    assert child.stdout is not None
    w, r = child.stdin.fileno(), child.stdout.fileno()

    def read_exact(n: int) -> bytes:
        parts = []
        while n:
            chunk = os.read(r, n)
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def one(x: int) -> None:
        request = pickle.dumps((func, (x,)), 5)
        os.write(w, struct.pack(">I", len(request)) + request)
        (size,) = struct.unpack(">I", read_exact(4))
        pickle.loads(read_exact(size))

    one(0)
    start = time.perf_counter()
    for x in range(calls):
        one(x)
    elapsed = time.perf_counter() - start
    child.stdin.close()
    child.wait()
    child.stdout.close()
    return calls / elapsed


# -- async libraries: procio and AnyIO ---------------------------------------------------

AsyncRun = Callable[..., Awaitable[Any]]


async def _round_trip(run: AsyncRun, calls: int) -> float:
    await run(func, 0)
    start = time.perf_counter()
    for x in range(calls):
        await run(func, x)
    return calls / (time.perf_counter() - start)


async def _echo(run: AsyncRun, data: bytes, repeats: int) -> float:
    await run(func, b"warm")
    best = []
    for _ in range(repeats):
        start = time.perf_counter()
        back = await run(func, data)
        best.append(time.perf_counter() - start)
        assert len(back) == len(data)
    best.sort()
    return len(data) / MiB / best[len(best) // 2]


async def _cold(run: AsyncRun) -> float:
    start = time.perf_counter()
    await run(func, 1)
    return (time.perf_counter() - start) * 1000


async def _concurrent(run: AsyncRun, calls_each: int) -> float:
    await run(func, 0)

    async def caller() -> None:
        for x in range(calls_each):
            await run(func, x)

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(CALLERS):
            tg.start_soon(caller)
    return CALLERS * calls_each / (time.perf_counter() - start)


def _async_rows(
    name: str, role: str, run: AsyncRun, backend: str, sizes: dict[str, int]
) -> list[Row]:
    def go(coro_fn: Callable[..., Awaitable[float]], *args: Any) -> float:
        return float(anyio.run(coro_fn, *args, backend=backend))

    data = os.urandom(sizes["echo_mib"] * MiB)
    cold = sorted(go(_cold, run) for _ in range(sizes["cold"]))[sizes["cold"] // 2]
    return [
        _more(ROUND_TRIP, name, go(_round_trip, run, sizes["calls"]), "calls/s", role),
        _more(ECHO, name, go(_echo, run, data, sizes["echo"]), "MB/s", role),
        _less(COLD, name, cold, "ms", role),
        _more(CONCURRENT, name, go(_concurrent, run, sizes["calls"] // CALLERS), "calls/s", role),
    ]


# -- executors: loky, ProcessPoolExecutor, trio-parallel ----------------------------------


def _executor_rows(
    name: str, make: Callable[[int], concurrent.futures.Executor], sizes: dict[str, int]
) -> list[Row]:
    rows = []
    with make(1) as executor:
        executor.submit(func, 0).result()
        start = time.perf_counter()
        for x in range(sizes["calls"]):
            executor.submit(func, x).result()
        rows.append(
            _more(ROUND_TRIP, name, sizes["calls"] / (time.perf_counter() - start), "calls/s")
        )
        data = os.urandom(sizes["echo_mib"] * MiB)
        times = []
        for _ in range(sizes["echo"]):
            start = time.perf_counter()
            executor.submit(func, data).result()
            times.append(time.perf_counter() - start)
        times.sort()
        rows.append(_more(ECHO, name, len(data) / MiB / times[len(times) // 2], "MB/s"))
    colds = []
    for _ in range(sizes["cold"]):
        start = time.perf_counter()
        with make(1) as executor:
            executor.submit(func, 1).result()
            colds.append((time.perf_counter() - start) * 1000)
    colds.sort()
    rows.append(_less(COLD, name, colds[len(colds) // 2], "ms"))
    calls_each = sizes["calls"] // CALLERS
    with make(os.cpu_count() or 2) as executor:
        executor.submit(func, 0).result()

        def caller() -> None:
            for x in range(calls_each):
                executor.submit(func, x).result()

        with concurrent.futures.ThreadPoolExecutor(CALLERS) as threads:
            start = time.perf_counter()
            for future in [threads.submit(caller) for _ in range(CALLERS)]:
                future.result()
            elapsed = time.perf_counter() - start
    rows.append(_more(CONCURRENT, name, CALLERS * calls_each / elapsed, "calls/s"))
    return rows


def _trio_parallel_rows(sizes: dict[str, int]) -> list[Row]:
    import trio

    trio_parallel: Any = importlib.import_module("trio_parallel")

    async def with_context(coro_fn: Callable[..., Awaitable[float]], *args: Any) -> float:
        async with trio_parallel.open_worker_context() as ctx:
            return await coro_fn(ctx.run_sync, *args)

    def go(coro_fn: Callable[..., Awaitable[float]], *args: Any) -> float:
        return float(trio.run(with_context, coro_fn, *args))

    name = "trio-parallel"
    data = os.urandom(sizes["echo_mib"] * MiB)
    colds = sorted(go(_cold) for _ in range(sizes["cold"]))
    return [
        _more(ROUND_TRIP, name, go(_round_trip, sizes["calls"]), "calls/s"),
        _more(ECHO, name, go(_echo, data, sizes["echo"]), "MB/s"),
        _less(COLD, name, colds[len(colds) // 2], "ms"),
        _more(CONCURRENT, name, go(_concurrent, sizes["calls"] // CALLERS), "calls/s"),
    ]


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    sizes = (
        {"calls": 200, "echo_mib": 1, "echo": 1, "cold": 1}
        if args.quick
        else {"calls": 4000, "echo_mib": 32, "echo": 3, "cold": 5}
    )
    rows: list[Row] = []
    rows += _async_rows("procio (asyncio)", "subject", to_process.run_sync, "asyncio", sizes)
    rows += _async_rows(
        "anyio.to_process (asyncio)", "anyio", anyio.to_process.run_sync, "asyncio", sizes
    )
    rows.append(
        _more(
            ROUND_TRIP,
            "floor: pipe ping-pong with pickle",
            floor_round_trip(sizes["calls"]),
            "calls/s",
            "floor",
        )
    )
    rows += _async_rows("procio (trio)", "other", to_process.run_sync, "trio", sizes)
    if _have("trio_parallel"):
        rows += _trio_parallel_rows(sizes)
    if _have("loky"):
        loky: Any = importlib.import_module("loky")
        rows += _executor_rows("loky", lambda n: loky.ProcessPoolExecutor(n), sizes)
    rows += _executor_rows(
        "ProcessPoolExecutor", lambda n: concurrent.futures.ProcessPoolExecutor(n), sizes
    )
    rows.sort(key=lambda row: [ROUND_TRIP, ECHO, COLD, CONCURRENT].index(row.group))
    report(rows, args.json)


if __name__ == "__main__":
    main()
