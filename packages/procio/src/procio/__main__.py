"""``python -m procio``: a short live tour of what procio does, on this machine.

It runs commands (a timeout that keeps the partial output, a cancelled shell whose
whole process tree is cleaned up), streams a child's output decoded line by line, runs
Python functions in worker processes (a pool fanning out, a ``pool.map`` over many
items with its progress, ``print`` in a worker, a crashed worker, a remote traceback),
and points to the documentation, where the benchmark report compares procio with AnyIO
(the tour measures nothing itself: figures come from the benchmark suite alone). On a
terminal, a progress line redraws in place; when the output is piped, it prints plain
lines only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

import anyio

from procio import (
    BrokenWorkerProcess,
    CancelPolicy,
    LineReceiveStream,
    WorkerPool,
    open_process,
    run_process,
    to_process,
)

# The child of part 2: lines ended by LF and CRLF, arriving a little apart, then a last
# line without a newline, cut inside a UTF-8 character.
_CHILD = """\
import sys, time
for i in range(1, 5):
    end = "\\r\\n" if i % 2 else "\\n"
    sys.stdout.write(f"step {i}/4: caf\\u00e9 \\u2713{end}")
    sys.stdout.flush()
    time.sleep(0.12)
sys.stdout.buffer.write("cut inside a character: caf\\u00e9".encode()[:-1])
"""

# The child of part 1's timeout: a line every 0.1 s, for longer than it is given.
_TICKER = """\
import sys, time
for i in range(1, 100):
    print(f"tick {i}", flush=True)
    time.sleep(0.1)
"""

# A shell that starts two grandchildren, writes their pids to a file, and waits.
_TREE = 'sleep 60 & echo $! >> "$1"; sleep 60 & echo $! >> "$1"; wait'

DOCS = "https://github.com/procio/procio/tree/main/docs"

POOL_WORKERS = 4
FAN_OUT = 8
NAP = 0.2  # seconds each fanned-out call sleeps
MAP_ITEMS = 2_000
MAP_NAP = 0.001  # seconds each mapped item sleeps: a small task, many of them


class Progress:
    """Shows how far a measurement has got while it runs.

    On a terminal, one line is redrawn in place with ``\\r`` several times a second and
    wiped when the measurement ends. When the output is not a terminal, a single plain
    line says what is being measured, so a log never holds control characters.
    """

    def __init__(self, out: TextIO, label: str, total: int | None) -> None:
        self.out = out
        self.label = label
        self.total = total
        self.done = 0
        self.interactive = out.isatty()
        self._started = time.perf_counter()
        self._width = 0

    def advance(self) -> None:
        """Count one more step done."""
        self.done += 1

    def draw(self) -> None:
        """Redraw the progress line (on a terminal only)."""
        if not self.interactive:
            return
        elapsed = time.perf_counter() - self._started
        if self.total:
            filled = round(20 * self.done / self.total)
            state = f"[{'#' * filled}{'.' * (20 - filled)}] {self.done}/{self.total}"
        else:
            state = "." * (1 + int(elapsed * 4) % 3)
        text = f"   {self.label} {state} {elapsed:4.1f} s"
        self._width = max(self._width, len(text))
        self.out.write("\r" + text.ljust(self._width))
        self.out.flush()

    def start(self) -> None:
        """Show that the measurement has begun."""
        if self.interactive:
            self.draw()
        else:
            count = f", {self.total} times" if self.total else ""
            self.out.write(f"   {self.label}{count} ...\n")
            self.out.flush()

    def finish(self) -> None:
        """Wipe the progress line, leaving the cursor at the start of the line."""
        if self.interactive:
            self.out.write("\r" + " " * self._width + "\r")
            self.out.flush()


@asynccontextmanager
async def progress(out: TextIO, label: str, total: int | None = None) -> AsyncIterator[Progress]:
    """Show a :class:`Progress` line, redrawn by a task of its own, while the block runs."""
    bar = Progress(out, label, total)
    bar.start()
    async with anyio.create_task_group() as tg:
        if bar.interactive:

            async def redraw() -> None:
                while True:
                    await anyio.sleep(0.1)
                    bar.draw()

            tg.start_soon(redraw)
        try:
            yield bar
        finally:
            tg.cancel_scope.cancel()
            bar.finish()


def _nap(seconds: float) -> int:
    """Sleep in a worker and say which process it was (for the fan-out)."""
    time.sleep(seconds)
    return os.getpid()


def _tick(item: int) -> int:
    """One small task of the map: a short sleep, then the item itself."""
    time.sleep(MAP_NAP)
    return item


def _greet(name: str) -> None:
    """Print from a worker: procio forwards it to this process's stdout."""
    print(f"   | hello {name}, from worker {os.getpid()}", flush=True)


def _crash() -> None:
    """Kill the worker running this call, as a segfault in an extension would."""
    os.kill(os.getpid(), signal.SIGKILL)


def _pids_alive(pids: list[int]) -> list[int]:
    """The processes of *pids* that still run (a zombie waiting to be reaped does not)."""
    alive = []
    for pid in pids:
        try:
            os.kill(pid, 0)
            with open(f"/proc/{pid}/stat", "rb") as f:
                # The state follows the command name, which is in parentheses.
                if f.read().rpartition(b")")[2].split()[0] == b"Z":
                    continue
        except ProcessLookupError:
            continue
        except FileNotFoundError:
            # Gone between the two looks, or no /proc here: then kill() is our view.
            if os.path.isdir("/proc"):
                continue
        alive.append(pid)
    return alive


class Demo:
    """The tour itself; each part prints as it goes."""

    def __init__(self, out: TextIO, backend: str) -> None:
        self.out = out
        self.backend = backend

    def say(self, text: str = "") -> None:
        """Print one line of the tour."""
        self.out.write(text + "\n")
        self.out.flush()

    async def run(self) -> None:
        """Run every part in turn."""
        # Prestarted, the pool's workers start now and load this module (whose
        # functions they will run) while the first parts of the tour go on.
        async with WorkerPool(max_workers=POOL_WORKERS, prestart=POOL_WORKERS) as pool:
            await self.commands()
            self.say()
            await self.lines()
            self.say()
            await self.workers(pool)
            self.say()
        self.say(f"More, and how fast each of these is beside AnyIO: {DOCS}")

    # -- processes --------------------------------------------------------------------

    async def commands(self) -> None:
        """A one-shot command, a timeout with its partial output, a cancelled tree."""
        self.say("1. Commands: run_process() runs one and collects its output")
        result = await run_process(["uname", "-sr"])
        self.say(f"   uname -sr -> exit {result.returncode}: {result.stdout.decode().strip()!r}")

        try:
            await run_process([sys.executable, "-c", _TICKER], timeout=0.35)
        except subprocess.TimeoutExpired as timeout:
            ticks = bytes(timeout.output or b"").decode().splitlines()
            self.say(
                f"   timeout=0.35 -> TimeoutExpired, carrying the output read so far: "
                f"{len(ticks)} ticks, the last {ticks[-1] if ticks else None!r}"
            )

        with tempfile.TemporaryDirectory() as folder:
            pid_file = os.path.join(folder, "pids")
            policy = CancelPolicy(grace_period=2)
            async with anyio.create_task_group() as tg:
                process = await tg.start(
                    lambda task_status: run_process(
                        ["sh", "-c", _TREE, "sh", pid_file],
                        signal_tree=True,
                        cancel_policy=policy,
                        task_status=task_status,
                    )
                )
                grandchildren: list[int] = []
                with anyio.fail_after(10):
                    while len(grandchildren) < 2:
                        await anyio.sleep(0.02)
                        text = await anyio.Path(pid_file).read_text()
                        grandchildren = [int(pid) for pid in text.split()]
                tg.cancel_scope.cancel()
            self.say(
                f"   sh -c 'sleep 60 & sleep 60 & wait' (pid {process.pid}) started "
                f"{len(grandchildren)} sleeps; the task was cancelled"
            )
            self.say(
                f"   signal_tree=True: SIGTERM to the whole group; the shell ended with "
                f"{process.returncode}, sleeps still alive: {len(_pids_alive(grandchildren))}"
            )

    async def lines(self) -> None:
        """Stream a child's output, decoded and framed into lines as it arrives."""
        self.say("2. A child's output, decoded and split into lines as it arrives")
        self.say("   (LF and CRLF endings, and a last line cut inside a UTF-8 character)")
        start = time.perf_counter()
        command = [sys.executable, "-c", _CHILD]
        async with await open_process(command, stdin=None, stderr=None) as process:
            assert process.stdout is not None
            async for line in LineReceiveStream(process.stdout, errors="replace"):
                self.say(f"   +{time.perf_counter() - start:5.2f} s  line: {line!r}")
        self.say(f"   the child exited with {process.returncode}; its last line still came")

    # -- workers ----------------------------------------------------------------------

    async def workers(self, pool: WorkerPool) -> None:
        """Functions in worker processes: fan-out, output, a crash, a remote error."""
        self.say("3. Python functions in worker processes")
        worker_pid = await to_process.run_sync(os.getpid)
        self.say(f"   to_process.run_sync(os.getpid) -> {worker_pid} (this process: {os.getpid()})")

        pids: list[int] = []

        async def one() -> None:
            pids.append(await pool.run_sync(_nap, NAP))

        start = time.perf_counter()
        async with (
            progress(self.out, "fanning out", FAN_OUT) as bar,
            anyio.create_task_group() as tg,
        ):
            for _ in range(FAN_OUT):
                tg.start_soon(one)
            while len(pids) < FAN_OUT:
                await anyio.sleep(0.05)
                bar.done = len(pids)
        elapsed = time.perf_counter() - start
        self.say(
            f"   a WorkerPool of {POOL_WORKERS}, prestarted as the tour began, ran {FAN_OUT} "
            f"calls of {NAP} s each in {elapsed:.1f} s, on {len(set(pids))} worker processes"
        )

        await self.many_tasks(pool)

        self.say("   print() in a worker shows up here:")
        await pool.run_sync(_greet, "world")

        try:
            await pool.run_sync(_crash)
        except BrokenWorkerProcess as broken:
            self.say(f"   a worker killed mid-call -> BrokenWorkerProcess: {broken}")
        after = await pool.run_sync(os.getpid)
        self.say(f"   the pool goes on: the next call ran in worker {after}")

        try:
            await to_process.run_sync(json.loads, '{"x": }')
        except ValueError as error:
            self.say("   an exception raised in a worker comes back with its own traceback:")
            self.say(f"      {type(error).__module__}.{type(error).__qualname__}: {error}")
            remote = str(getattr(error.__cause__, "traceback", ""))
            frames = [line.strip() for line in remote.splitlines() if line.startswith("  File ")]
            if frames:
                self.say(f"      raised at {frames[-1].removeprefix('File ')}")

    async def many_tasks(self, pool: WorkerPool) -> None:
        """A map over many small items on *pool*, with a live count of the results."""
        received: list[int] = []
        largest_chunk = 0
        async with (
            progress(self.out, "pool.map", MAP_ITEMS) as bar,
            pool.map(_tick, range(MAP_ITEMS)) as results,
        ):
            async for item in results:
                received.append(item)
                bar.done = results.completed
                largest_chunk = max(largest_chunk, results.chunksize)
        order = "in input order" if received == list(range(MAP_ITEMS)) else "OUT OF ORDER"
        self.say(
            f"   pool.map over {MAP_ITEMS} small items: {len(received)}/{MAP_ITEMS} results, "
            f"{order}; automatic chunks of up to {largest_chunk} items"
        )


def _procio_version() -> str:
    try:
        return version("procio")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "(not installed)"


def main(argv: list[str] | None = None) -> None:
    """Run the tour on asyncio (the default), asyncio with uvloop, or Trio."""
    parser = argparse.ArgumentParser(
        prog="python -m procio", description="A short live tour of what procio does."
    )
    parser.add_argument(
        "--loop",
        choices=["asyncio", "uvloop", "trio"],
        default="asyncio",
        help="the event loop to run on (uvloop and trio must be installed)",
    )
    parser.add_argument("--trio", action="store_true", help="the same as --loop trio")
    args = parser.parse_args(argv)
    loop = "trio" if args.trio else args.loop
    backend = "trio" if loop == "trio" else "asyncio"
    options: dict[str, Any] = {}
    if loop == "uvloop":
        import uvloop

        options["loop_factory"] = uvloop.new_event_loop
    out = sys.stdout
    started = time.perf_counter()
    out.write(
        f"procio {_procio_version()} on {loop}, Python {platform.python_version()}, "
        f"{platform.system()}, {os.cpu_count()} CPUs\n\n"
    )
    demo = Demo(out, backend)
    anyio.run(demo.run, backend=backend, backend_options=options)
    out.write(f"\nDone in {time.perf_counter() - started:.1f} s.\n")
    out.flush()


# Worker processes import this module as __mp_main__: only a real run starts the tour.
if __name__ == "__main__":
    main()
