"""Benchmarks of the process layer: procio beside AnyIO and the raw floor, in one run.

    python benchmarks/bench_process.py [--quick] [--json PATH]

Rows:
- spawn ``/bin/true`` and reap it, one after the other: wall time per spawn, and the
  parent's own CPU time per spawn (``time.process_time``, which does not count children);
  the floor is ``os.posix_spawn`` + ``os.waitpid`` with no pipes at all.
- read 256 MiB from a child's stdout: MB/s; the floor is a blocking ``os.read`` loop on a
  ``subprocess.Popen`` pipe, with the same chunk size as the async streams.
- spawns per second with 16 spawns in flight.

All async rows run on asyncio through ``anyio.run``; procio also gets a Trio row where it
is cheap to add.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import procio_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Row, parser, report

TRUE = "/bin/true"
CHUNK = 65536


# -- spawn and reap, sequential ------------------------------------------------------


def spawn_floor(count: int) -> tuple[float, float]:
    """Return (wall, parent CPU) seconds per spawn with posix_spawn + waitpid."""
    env = dict(os.environ)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        pid = os.posix_spawn(TRUE, [TRUE], env)
        os.waitpid(pid, 0)
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


async def _spawn_procio(count: int) -> tuple[float, float]:
    await procio_process.run_process([TRUE])  # warm up imports and the loop
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await procio_process.run_process([TRUE])
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


async def _spawn_anyio(count: int) -> tuple[float, float]:
    await anyio.run_process([TRUE])
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(count):
        await anyio.run_process([TRUE])
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The lowest wall time and the lowest CPU time of the rounds (the least disturbed)."""
    return min(wall for wall, _ in runs), min(cpu for _, cpu in runs)


def run_async(
    func: Callable[[int], Awaitable[tuple[float, float]]], count: int, backend: str = "asyncio"
) -> tuple[float, float]:
    if backend == "uvloop":
        import uvloop

        return anyio.run(func, count, backend_options={"loop_factory": uvloop.new_event_loop})
    return anyio.run(func, count, backend=backend)


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def spawn_rows(count: int, repeats: int) -> list[Row]:
    # Interleaved rounds, best of each: on a shared machine the load drifts, and
    # measuring one contender after the other would hand the drift to one of them.
    runs: dict[str, list[tuple[float, float]]] = {}
    uvloop = _has_uvloop()
    for _ in range(repeats):
        runs.setdefault("floor", []).append(spawn_floor(count))
        runs.setdefault("procio", []).append(run_async(_spawn_procio, count))
        runs.setdefault("procio_trio", []).append(run_async(_spawn_procio, count, "trio"))
        if uvloop:
            runs.setdefault("procio_uvloop", []).append(run_async(_spawn_procio, count, "uvloop"))
        runs.setdefault("anyio", []).append(run_async(_spawn_anyio, count))
    measured = {name: best(values) for name, values in runs.items()}
    wall_group = "spawn /bin/true + reap, sequential: wall per spawn"
    cpu_group = "spawn /bin/true + reap, sequential: parent CPU per spawn"
    rows = []
    contenders = [
        ("procio run_process (asyncio)", "subject", "procio"),
        ("procio run_process (trio)", "other", "procio_trio"),
        ("procio run_process (uvloop)", "other", "procio_uvloop"),
        ("anyio.run_process (asyncio)", "anyio", "anyio"),
        ("floor: os.posix_spawn + os.waitpid", "floor", "floor"),
    ]
    for name, role, key in contenders:
        if key not in measured:
            continue
        wall, cpu = measured[key]
        rows.append(Row(wall_group, name, wall * 1e3, "ms", higher_is_better=False, role=role))
        rows.append(Row(cpu_group, name, cpu * 1e6, "µs", higher_is_better=False, role=role))
    return rows


# -- read a large stdout ---------------------------------------------------------------


def _head_command(size: int) -> list[str]:
    return ["head", "-c", str(size), "/dev/zero"]


def read_floor(size: int) -> float:
    start = time.perf_counter()
    with subprocess.Popen(_head_command(size), stdout=subprocess.PIPE, bufsize=0) as popen:
        assert popen.stdout is not None
        fd = popen.stdout.fileno()
        total = 0
        while chunk := os.read(fd, CHUNK):
            total += len(chunk)
    assert total == size, total
    return time.perf_counter() - start


async def _read_procio(size: int, pipesize: int = -1) -> float:
    start = time.perf_counter()
    total = 0
    async with await procio_process.open_process(
        _head_command(size), stdin=None, stderr=None, pipesize=pipesize
    ) as process:
        assert process.stdout is not None
        async for chunk in process.stdout:
            total += len(chunk)
    assert total == size, total
    return time.perf_counter() - start


async def _read_procio_big_pipe(size: int) -> float:
    return await _read_procio(size, pipesize=1 << 20)


async def _read_anyio(size: int) -> float:
    start = time.perf_counter()
    total = 0
    async with await anyio.open_process(_head_command(size), stdin=None, stderr=None) as process:
        assert process.stdout is not None
        async for chunk in process.stdout:
            total += len(chunk)
    assert total == size, total
    return time.perf_counter() - start


def read_rows(size: int, repeats: int) -> list[Row]:
    megabytes = size / 1e6
    group = f"read {size >> 20} MiB of stdout ({CHUNK >> 10} KiB reads)"

    def rate(seconds: list[float]) -> float:
        return megabytes / min(seconds)

    contenders: dict[str, Callable[[], float]] = {
        "floor": lambda: read_floor(size),
        "procio": lambda: anyio.run(_read_procio, size),
        "procio_trio": lambda: anyio.run(_read_procio, size, backend="trio"),
        "big_pipe": lambda: anyio.run(_read_procio_big_pipe, size),
        "anyio": lambda: anyio.run(_read_anyio, size),
    }
    seconds: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):  # interleaved, as for the spawns
        for name, measure in contenders.items():
            seconds[name].append(measure())
    floor, procio, procio_trio, big_pipe, anyio_ = (rate(seconds[name]) for name in contenders)
    return [
        Row(group, "procio (asyncio)", procio, "MB/s", higher_is_better=True, role="subject"),
        Row(group, "procio (trio)", procio_trio, "MB/s", higher_is_better=True, role="other"),
        Row(
            group,
            "procio, pipesize=1 MiB (asyncio)",
            big_pipe,
            "MB/s",
            higher_is_better=True,
            role="other",
        ),
        Row(group, "anyio (asyncio)", anyio_, "MB/s", higher_is_better=True, role="anyio"),
        Row(
            group,
            "floor: blocking os.read loop",
            floor,
            "MB/s",
            higher_is_better=True,
            role="floor",
        ),
    ]


# -- spawns per second, 16 at a time ---------------------------------------------------


async def _concurrent(run: Callable[[list[str]], Awaitable[object]], total: int) -> float:
    limiter = anyio.CapacityLimiter(16)

    async def one() -> None:
        async with limiter:
            await run([TRUE])

    start = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for _ in range(total):
            tg.start_soon(one)
    return total / (time.perf_counter() - start)


async def _concurrent_procio(total: int) -> float:
    return await _concurrent(procio_process.run_process, total)


async def _concurrent_anyio(total: int) -> float:
    return await _concurrent(anyio.run_process, total)


def concurrency_rows(total: int, repeats: int) -> list[Row]:
    group = "spawn /bin/true + reap, 16 at a time"
    rates: dict[str, list[float]] = {"procio": [], "procio_trio": [], "anyio": []}
    for _ in range(repeats):  # interleaved, as for the spawns
        rates["procio"].append(anyio.run(_concurrent_procio, total))
        rates["procio_trio"].append(anyio.run(_concurrent_procio, total, backend="trio"))
        rates["anyio"].append(anyio.run(_concurrent_anyio, total))
    procio, procio_trio, anyio_ = (max(rates[name]) for name in ("procio", "procio_trio", "anyio"))
    return [
        Row(group, "procio (asyncio)", procio, "spawns/s", higher_is_better=True, role="subject"),
        Row(group, "procio (trio)", procio_trio, "spawns/s", higher_is_better=True, role="other"),
        Row(group, "anyio (asyncio)", anyio_, "spawns/s", higher_is_better=True, role="anyio"),
    ]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    if args.quick:
        spawns, read_size, concurrent, repeats = 20, 4 << 20, 64, 1
    else:
        spawns, read_size, concurrent, repeats = 200, 256 << 20, 400, 7
    rows = spawn_rows(spawns, repeats)
    rows += read_rows(read_size, repeats)
    rows += concurrency_rows(concurrent, repeats)
    report(rows, args.json)


if __name__ == "__main__":
    main()
