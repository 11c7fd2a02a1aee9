"""Subinterpreter worker benchmarks: three ratios from one run, with their spread.

Run on Python 3.13 or newer, with procio-interpreters installed::

    python packages/procio-interpreters/benchmarks/bench_interpreters.py [--loop asyncio|trio]

1. Round trip ``f(x) = x`` (``operator.pos`` on an int), sequential: procio's
   InterpreterBackend pool against ``anyio.to_interpreter.run_sync``, both warm.
2. Cold start to the first result: a new InterpreterBackend pool against a new pool of
   procio worker processes (the default backend).
3. Two CPU-bound calls at once on two interpreters, against the same two calls one
   after the other (real parallelism: one GIL per interpreter). Beside it, the same
   ratio for two bare ``_interpreters.exec`` threads: what this machine allows at the
   moment (on a busy machine with two cores, little).

Contenders alternate within each repetition, so that the machine's load falls on both
alike; each ratio is the median over the repetitions, with its lowest and highest value.
"""

from __future__ import annotations

import argparse
import operator
import os
import statistics
import sys
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
from interp_bench_funcs import burn
from procio_interpreters import InterpreterBackend
from procio_workers import WorkerPool

Timed = Callable[[], Awaitable[float]]


async def round_trips(run: Callable[[int], Awaitable[object]], calls: int) -> float:
    """Seconds per call of *calls* sequential calls."""
    start = time.perf_counter()
    for i in range(calls):
        await run(i)
    return (time.perf_counter() - start) / calls


async def bench_round_trip(repetitions: int, calls: int) -> list[float]:
    """Ratio 1 per repetition."""
    from anyio import to_interpreter

    limiter = anyio.CapacityLimiter(1)
    ratios = []
    async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
        await pool.run_sync(operator.pos, 0)
        await to_interpreter.run_sync(operator.pos, 0, limiter=limiter)
        for _ in range(repetitions):
            ours = await round_trips(lambda i: pool.run_sync(operator.pos, i), calls)
            theirs = await round_trips(
                lambda i: to_interpreter.run_sync(operator.pos, i, limiter=limiter), calls
            )
            ratios.append(theirs / ours)
            print(f"  round trip: procio {ours * 1e6:7.1f} µs, anyio {theirs * 1e6:7.1f} µs")
    return ratios


async def first_result(pool: WorkerPool) -> float:
    """Seconds from opening *pool* to its first result (closing it is not counted)."""
    start = time.perf_counter()
    async with pool:
        await pool.run_sync(operator.pos, 1)
        elapsed = time.perf_counter() - start
    return elapsed  # noqa: RET504 - taken before the pool closes


async def bench_cold_start(repetitions: int) -> list[float]:
    """Ratio 2 per repetition."""
    ratios = []
    for _ in range(repetitions):
        ours = await first_result(WorkerPool(backend=InterpreterBackend(), max_workers=1))
        theirs = await first_result(WorkerPool(max_workers=1))
        ratios.append(ours / theirs)
        print(f"  cold start: interpreter {ours * 1e3:6.1f} ms, process {theirs * 1e3:6.1f} ms")
    return ratios


async def bench_parallel(repetitions: int, iterations: int) -> list[float]:
    """Ratio 3 per repetition."""
    ratios = []
    async with WorkerPool(backend=InterpreterBackend(), max_workers=2, prestart=2) as pool:
        # Both interpreters import the function's module before anything is timed.
        async with anyio.create_task_group() as tg:
            tg.start_soon(pool.run_sync, burn, 10)
            tg.start_soon(pool.run_sync, burn, 10)
        for _ in range(repetitions):
            start = time.perf_counter()
            await pool.run_sync(burn, iterations)
            await pool.run_sync(burn, iterations)
            one_after_other = time.perf_counter() - start
            start = time.perf_counter()
            async with anyio.create_task_group() as tg:
                tg.start_soon(pool.run_sync, burn, iterations)
                tg.start_soon(pool.run_sync, burn, iterations)
            both_at_once = time.perf_counter() - start
            ratios.append(both_at_once / one_after_other)
            print(
                f"  parallel: 2 at once {both_at_once * 1e3:6.1f} ms, "
                f"one after the other {one_after_other * 1e3:6.1f} ms"
            )
    return ratios


def summary(name: str, ratios: list[float], target: str) -> str:
    """One line of the report."""
    return (
        f"{name:<48} {statistics.median(ratios):5.2f}x  "
        f"(min {min(ratios):.2f}, max {max(ratios):.2f}, n={len(ratios)})  target {target}"
    )


def _bare_parallel(iterations: int) -> float:
    """The parallel ratio of two bare interpreters in two threads, without procio."""
    import _interpreters

    code = f"from interp_bench_funcs import burn\nburn({iterations})"
    first, second = _interpreters.create(), _interpreters.create()
    try:
        setup = f"import sys\nsys.path[:] = {sys.path!r}\nfrom interp_bench_funcs import burn"
        for each in (first, second):
            _interpreters.exec(each, setup)
        start = time.perf_counter()
        _interpreters.exec(first, code)
        _interpreters.exec(second, code)
        one_after_other = time.perf_counter() - start
        threads = [
            threading.Thread(target=_interpreters.exec, args=(each, code))
            for each in (first, second)
        ]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return (time.perf_counter() - start) / one_after_other
    finally:
        _interpreters.destroy(first)
        _interpreters.destroy(second)


async def main(repetitions: int) -> None:
    """Measure the three ratios and print them."""
    load = os.getloadavg()[0]
    print(f"Python {sys.version.split()[0]}, load average {load:.1f} on {os.cpu_count()} CPUs")
    trip = await bench_round_trip(repetitions, 2000)
    cold = await bench_cold_start(repetitions)
    iterations = 2_000_000
    par = await bench_parallel(repetitions, iterations)
    bare = []
    for _ in range(repetitions):
        bare.append(await anyio.to_thread.run_sync(_bare_parallel, iterations))
        print(f"  bare interpreters: parallel / one after the other {bare[-1]:.2f}")
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print()
    print(summary("round trip f(x)=x, anyio.to_interpreter / procio", trip, ">= 2x"))
    print(summary("cold start to first result, interpreter / process", cold, "<= 0.5x"))
    print(summary("2 CPU-bound calls, in parallel / one after other", par, "<= 0.6x"))
    print(summary("  same, two bare interpreters (this machine now)", bare, "floor"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "trio"], default="asyncio")
    parser.add_argument("--repetitions", type=int, default=7)
    options = parser.parse_args()
    backend_options = {}
    backend = options.loop
    if options.loop == "uvloop":
        import uvloop

        backend, backend_options = "asyncio", {"loop_factory": uvloop.new_event_loop}
    print(f"event loop: {options.loop}")
    anyio.run(main, options.repetitions, backend=backend, backend_options=backend_options)
