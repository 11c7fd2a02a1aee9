"""Subinterpreter workers (Python 3.13+): round trip and cold start, in interleaved rounds.

    python benchmarks/bench_interpreters.py [--quick] [--json PATH]

``run.py`` runs it on each ``--also-python`` interpreter of version 3.13 or newer (the
suite's own interpreter is older), so that its rows join the one results file.

- ``interpreter-round-trip``: sequential calls of ``f(x) = x`` (``operator.pos``), calls
  per second, on warm pools: procio's ``InterpreterBackend``, AnyIO's
  ``to_interpreter.run_sync`` (one interpreter, as its limiter of one token gives), and
  procio's default worker process beside them.
- ``interpreter-cold-start``: milliseconds from opening a pool to its first result,
  pool start included, closing not: an ``InterpreterBackend`` pool against a pool of
  procio worker processes. (AnyIO's ``to_interpreter`` keeps its interpreters for the
  event loop's life, so it has no cold start to take in the same loop.)
"""

from __future__ import annotations

import operator
import sys
import time
from collections.abc import Awaitable, Callable

import anyio
from _harness import Row, parser, report, rounds
from procio_interpreters import InterpreterBackend, interpreters_supported
from procio_workers import WorkerPool

LOOP = "asyncio"
PYTHON = ".".join(map(str, sys.version_info[:2]))


def _row(figure: str, title: str, name: str, role: str, unit: str, *, higher: bool) -> Row:
    return Row(figure, title, "workers", name, role, unit, higher)


async def round_trip_rows(repeats: int, calls: int) -> list[Row]:
    """One calls/s sample per contender per round, each of *calls* sequential calls."""
    from anyio import to_interpreter

    title = f"subinterpreter round trip f(x) = x, sequential, Python {PYTHON}"
    limiter = anyio.CapacityLimiter(1)
    async with (
        WorkerPool(backend=InterpreterBackend(), max_workers=1) as interpreters,
        WorkerPool(max_workers=1) as processes,
    ):
        contenders: dict[str, tuple[Row, Callable[[int], Awaitable[object]]]] = {
            "interpreter": (
                _row(
                    "interpreter-round-trip",
                    title,
                    f"procio InterpreterBackend ({LOOP})",
                    "subject",
                    "calls/s",
                    higher=True,
                ),
                lambda i: interpreters.run_sync(operator.pos, i),
            ),
            "anyio": (
                _row(
                    "interpreter-round-trip",
                    title,
                    f"anyio.to_interpreter ({LOOP})",
                    "anyio",
                    "calls/s",
                    higher=True,
                ),
                lambda i: to_interpreter.run_sync(operator.pos, i, limiter=limiter),
            ),
            "process": (
                _row(
                    "interpreter-round-trip",
                    title,
                    f"procio worker process ({LOOP})",
                    "other",
                    "calls/s",
                    higher=True,
                ),
                lambda i: processes.run_sync(operator.pos, i),
            ),
        }
        for _, call in contenders.values():  # warm every pool before timing
            for i in range(max(calls // 10, 5)):
                await call(i)
        for _, key in rounds(repeats, list(contenders)):
            row, call = contenders[key]
            start = time.perf_counter()
            for i in range(calls):
                await call(i)
            row.samples.append(calls / (time.perf_counter() - start))
    return [row for row, _ in contenders.values()]


async def _first_result(pool: WorkerPool) -> float:
    start = time.perf_counter()
    async with pool:
        await pool.run_sync(operator.pos, 1)
        elapsed = time.perf_counter() - start
    return elapsed * 1e3


async def cold_start_rows(repeats: int) -> list[Row]:
    """One cold start per contender per round."""
    title = f"subinterpreter cold start to first result, Python {PYTHON}"
    note = (
        "From opening a new pool to its first result, pool start included, its closing "
        "not; the reference is a new pool of procio worker processes in the same round."
    )
    contenders: dict[str, tuple[Row, Callable[[], WorkerPool]]] = {
        "interpreter": (
            _row(
                "interpreter-cold-start",
                title,
                f"procio InterpreterBackend ({LOOP})",
                "subject",
                "ms",
                higher=False,
            ),
            lambda: WorkerPool(backend=InterpreterBackend(), max_workers=1),
        ),
        "process": (
            _row(
                "interpreter-cold-start",
                title,
                f"procio worker process ({LOOP})",
                "other",
                "ms",
                higher=False,
            ),
            lambda: WorkerPool(max_workers=1),
        ),
    }
    contenders["interpreter"][0].note = note
    await _first_result(contenders["process"][1]())  # file caches warm, for both
    for _, key in rounds(repeats, list(contenders)):
        row, make = contenders[key]
        row.samples.append(await _first_result(make()))
    return [row for row, _ in contenders.values()]


async def measure(quick: bool) -> list[Row]:
    repeats, calls = (2, 50) if quick else (7, 2000)
    rows = await round_trip_rows(repeats, calls)
    rows += await cold_start_rows(repeats * 2)
    return rows


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if not interpreters_supported():
        sys.exit(f"subinterpreter workers need Python 3.13 or newer, not {sys.version.split()[0]}")
    report(anyio.run(measure, args.quick), args.json)


if __name__ == "__main__":
    main()
