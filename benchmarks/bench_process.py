"""Benchmarks of the process layer: procio beside AnyIO and the raw floor, in one run.

    python benchmarks/bench_process.py [--quick] [--json PATH] [--spawn-only]

Rows:
- spawn ``/bin/true`` and reap it, one after the other: wall time per spawn, and the
  parent's own CPU time per spawn (``time.process_time``, which does not count children);
  the floor is ``os.posix_spawn`` + ``os.waitpid`` with no pipes at all. Beside
  ``run_process``, procio's own spawn of the same child with no event loop (blocking
  reads and wait) splits procio's distance to the floor into the spawn and the loop,
  and the bare async spawn (the floor's spawn, its exit awaited once on the event loop)
  is the least a spawn on an event loop costs.
- read 256 MiB from a child's stdout: MB/s; the floor is a blocking ``os.read`` loop on a
  ``subprocess.Popen`` pipe, with the same chunk size as the async streams. The bare
  async read is the floor's loop on a non-blocking pipe, the event loop awaited only
  when the pipe is empty.
- spawns per second with 16 spawns in flight.

Every row is sampled in interleaved rounds (see ``_harness``); the spawn rows carry the
Python version in their figure, so that ``run.py --also-python`` can add the same rows
measured on another interpreter.

All async rows run on asyncio through ``anyio.run``; procio also gets a Trio row where it
is cheap to add.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import procio_process
from procio_process import _spawn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Row, parser, report, rounds

TRUE = "/bin/true"
CHUNK = 65536


# -- spawn and reap, sequential ------------------------------------------------------


def _clocks() -> tuple[float, float]:
    """The wall clock and the parent's CPU clock, read as the spawns begin."""
    return time.perf_counter(), time.process_time()


def _per_spawn(started: tuple[float, float], count: int) -> tuple[float, float]:
    """(wall, parent CPU) seconds per spawn since *started*, for *count* spawns.

    Each spawn row reads the clocks before its loop and calls this after it: nothing
    of the bookkeeping runs inside the loop it times.
    """
    wall, cpu = started
    return (time.perf_counter() - wall) / count, (time.process_time() - cpu) / count


def spawn_floor(count: int) -> tuple[float, float]:
    """Return (wall, parent CPU) seconds per spawn with posix_spawn + waitpid."""
    env = dict(os.environ)
    started = _clocks()
    for _ in range(count):
        pid = os.posix_spawn(TRUE, [TRUE], env)
        os.waitpid(pid, 0)
    return _per_spawn(started, count)


def spawn_procio_blocking(count: int) -> tuple[float, float]:
    """(wall, parent CPU) per spawn: procio's spawn of the child ``run_process`` starts,
    with no event loop.

    The same two output pipes and the same primitive (:func:`_spawn.spawn_piped`), then
    blocking reads to end of file and a blocking wait, as the floor waits. Set beside
    ``run_process``, it splits procio's distance to the floor into the spawn itself and
    the event loop's part: the readiness wake-up, and the reaping and closing after it.
    """
    started = _clocks()
    for _ in range(count):
        stdout_fd, child_stdout = os.pipe()
        stderr_fd, child_stderr = os.pipe()
        try:
            child = _spawn.spawn_piped([TRUE], child_stdout, child_stderr)
        finally:
            os.close(child_stdout)
            os.close(child_stderr)
        try:
            while os.read(stdout_fd, CHUNK):
                pass
            while os.read(stderr_fd, CHUNK):
                pass
        finally:
            os.close(stdout_fd)
            os.close(stderr_fd)
        child.wait()
    return _per_spawn(started, count)


async def _bare_spawn(env: dict[str, str]) -> None:
    # The floor's own calls on purpose: posix_spawn returns once the child exists, and
    # waitpid comes once the child's exit is there (readable pidfd), so neither blocks.
    pid = os.posix_spawn(TRUE, [TRUE], env)  # noqa: ASYNC221
    try:
        exit_fd = os.pidfd_open(pid)
        try:
            await anyio.wait_readable(exit_fd)
        finally:
            os.close(exit_fd)
    finally:
        os.waitpid(pid, 0)  # noqa: ASYNC222 - reaps at once; also if the wait was interrupted


async def _awaited_spawns(
    spawn: Callable[[], Awaitable[object]], count: int
) -> tuple[float, float]:
    """(wall, parent CPU) per spawn of *count* awaited ``spawn()`` calls.

    One more call comes first, untimed: it warms up the imports and the event loop's
    waiting, for every async row alike.
    """
    await spawn()
    started = _clocks()
    for _ in range(count):
        await spawn()
    return _per_spawn(started, count)


async def spawn_bare_async(count: int) -> tuple[float, float]:
    """(wall, parent CPU) per spawn: the floor's spawn, with its wait on the event loop.

    ``os.posix_spawn`` with no pipes, as the floor; then, in place of the floor's
    blocking ``waitpid``, one wait on the event loop for the child's exit (its pidfd
    awaited through AnyIO's ``wait_readable``) and the ``waitpid`` that reaps it. It
    captures nothing and checks nothing: not a contender, but what one wait on the
    event loop adds to the floor's spawn on this machine, which every async spawn pays.
    """
    return await _awaited_spawns(functools.partial(_bare_spawn, dict(os.environ)), count)


async def _spawn_procio(count: int) -> tuple[float, float]:
    return await _awaited_spawns(functools.partial(procio_process.run_process, [TRUE]), count)


async def _spawn_anyio(count: int) -> tuple[float, float]:
    return await _awaited_spawns(functools.partial(anyio.run_process, [TRUE]), count)


def run_async(
    func: Callable[[int], Awaitable[tuple[float, float]]], count: int, backend: str = "asyncio"
) -> tuple[float, float]:
    if backend == "uvloop":
        import uvloop

        return anyio.run(func, count, backend_options={"loop_factory": uvloop.new_event_loop})
    return anyio.run(func, count, backend=backend)


def _with_spawn_method(method: str, run: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Run *run* with procio's plain spawns made by *method* (its tests switch so too)."""
    default = _spawn.METHOD
    _spawn.METHOD = method
    try:
        return run()
    finally:
        _spawn.METHOD = default


def _has_uvloop() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


PY = f"{sys.version_info[0]}.{sys.version_info[1]}"
BARE_ASYNC_SPAWN = "bare async spawn: posix_spawn, the exit awaited once on the loop (asyncio)"
BARE_ASYNC_READ = "bare async read: os.read, the loop awaited only on an empty pipe (asyncio)"


def spawn_rows(count: int, repeats: int) -> list[Row]:
    # Interleaved rounds: on a shared machine the load drifts, and measuring one
    # contender after the other would hand the drift to one of them.
    contenders: dict[str, tuple[str, str, Callable[[], tuple[float, float]]]] = {
        "floor": ("floor: os.posix_spawn + os.waitpid", "floor", lambda: spawn_floor(count)),
        "procio": (
            "procio run_process (asyncio)",
            "subject",
            lambda: run_async(_spawn_procio, count),
        ),
        "anyio": (
            "anyio.run_process (asyncio)",
            "anyio",
            lambda: run_async(_spawn_anyio, count),
        ),
    }
    if _spawn.METHOD == "fork_exec" and _spawn._CLOSEFROM is not None:
        # Python 3.13+ on glibc 2.34+: procio could spawn with os.posix_spawn too, but
        # takes fork_exec (see docs/process.md). Its posix_spawn path gets a row here.
        contenders["procio_posix_spawn"] = (
            "procio run_process, posix_spawn path (asyncio)",
            "other",
            lambda: _with_spawn_method("posix_spawn", lambda: run_async(_spawn_procio, count)),
        )
    if _spawn.AVAILABLE:
        contenders["procio_blocking"] = (
            "procio's spawn, no event loop: blocking reads + wait",
            "other",
            lambda: spawn_procio_blocking(count),
        )
    if hasattr(os, "pidfd_open"):
        contenders["bare_async"] = (
            BARE_ASYNC_SPAWN,
            "other",
            lambda: run_async(spawn_bare_async, count),
        )
    if importlib.util.find_spec("trio") is not None:
        contenders["procio_trio"] = (
            "procio run_process (trio)",
            "other",
            lambda: run_async(_spawn_procio, count, "trio"),
        )
    if _has_uvloop():
        contenders["procio_uvloop"] = (
            "procio run_process (uvloop)",
            "other",
            lambda: run_async(_spawn_procio, count, "uvloop"),
        )
    wall = {
        key: Row(
            f"spawn-wall-py{PY}",
            f"spawn /bin/true + reap, sequential, Python {PY}: wall per spawn",
            "process",
            name,
            role,
            "ms",
            higher_is_better=False,
        )
        for key, (name, role, _) in contenders.items()
    }
    cpu = {
        key: Row(
            f"spawn-cpu-py{PY}",
            f"spawn /bin/true + reap, sequential, Python {PY}: parent CPU per spawn",
            "process",
            name,
            role,
            "µs",
            higher_is_better=False,
        )
        for key, (name, role, _) in contenders.items()
    }
    for _, key in rounds(repeats, list(contenders)):
        seconds, cpu_seconds = contenders[key][2]()
        wall[key].samples.append(seconds * 1e3)
        cpu[key].samples.append(cpu_seconds * 1e6)
    return [*wall.values(), *cpu.values()]


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


async def read_bare_async(size: int) -> float:
    """Seconds to read *size* bytes: the floor's reads, each wait on the event loop.

    The floor's child and reads (``os.read`` of up to the same chunk size), on a
    non-blocking pipe: a read that finds the pipe empty awaits it through AnyIO's
    ``wait_readable``. No stream, no cancellation check, nothing joined: the least an
    async reader of this pipe does here, not a contender.
    """
    start = time.perf_counter()
    total = 0
    # The floor's child, started as the floor starts it; its exit, waited for as the
    # block is left, comes right after the end of its output.
    popen = subprocess.Popen(_head_command(size), stdout=subprocess.PIPE, bufsize=0)  # noqa: ASYNC220
    with popen:
        assert popen.stdout is not None
        fd = popen.stdout.fileno()
        os.set_blocking(fd, False)
        while True:
            try:
                chunk = os.read(fd, CHUNK)
            except BlockingIOError:
                await anyio.wait_readable(fd)
                continue
            if not chunk:
                break
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
    contenders: dict[str, tuple[str, str, Callable[[], float]]] = {
        "floor": ("floor: blocking os.read loop", "floor", lambda: read_floor(size)),
        "procio": ("procio (asyncio)", "subject", lambda: anyio.run(_read_procio, size)),
        "procio_trio": (
            "procio (trio)",
            "other",
            lambda: anyio.run(_read_procio, size, backend="trio"),
        ),
        "big_pipe": (
            "procio, pipesize=1 MiB (asyncio)",
            "other",
            lambda: anyio.run(_read_procio_big_pipe, size),
        ),
        "anyio": ("anyio (asyncio)", "anyio", lambda: anyio.run(_read_anyio, size)),
        "bare_async": (BARE_ASYNC_READ, "other", lambda: anyio.run(read_bare_async, size)),
    }
    title = f"read {size >> 20} MiB of stdout ({CHUNK >> 10} KiB reads)"
    rows = {
        key: Row("read", title, "process", name, role, "MB/s", higher_is_better=True)
        for key, (name, role, _) in contenders.items()
    }
    for _, key in rounds(repeats, list(contenders)):
        rows[key].samples.append(megabytes / contenders[key][2]())
    return list(rows.values())


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
    contenders: dict[str, tuple[str, str, Callable[[], float]]] = {
        "procio": ("procio (asyncio)", "subject", lambda: anyio.run(_concurrent_procio, total)),
        "procio_trio": (
            "procio (trio)",
            "other",
            lambda: anyio.run(_concurrent_procio, total, backend="trio"),
        ),
        "anyio": ("anyio (asyncio)", "anyio", lambda: anyio.run(_concurrent_anyio, total)),
    }
    title = "spawn /bin/true + reap, 16 at a time"
    rate = "spawns/s"
    rows = {
        key: Row("spawn-concurrent", title, "process", name, role, rate, higher_is_better=True)
        for key, (name, role, _) in contenders.items()
    }
    for _, key in rounds(repeats, list(contenders)):
        rows[key].samples.append(contenders[key][2]())
    return list(rows.values())


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--spawn-only",
        action="store_true",
        help="only the sequential spawn rows (for a second Python version)",
    )
    args = p.parse_args()
    if args.quick:
        spawns, read_size, concurrent, repeats = 20, 4 << 20, 64, 2
    else:
        spawns, read_size, concurrent, repeats = 200, 256 << 20, 400, 5
    rows = spawn_rows(spawns, repeats)
    if args.spawn_only:
        report(rows, args.json)
        return
    rows += read_rows(read_size, repeats)
    rows += concurrency_rows(concurrent, repeats)
    report(rows, args.json)


if __name__ == "__main__":
    main()
