"""``python -m procio``: a short live tour of what procio does, on this machine.

It runs a one-shot command, streams a child's output decoded line by line, and calls
Python functions in worker processes, timing procio beside AnyIO's own
``run_process`` and ``to_process.run_sync`` in the same run. On a terminal, a progress
line redraws in place; when the output is piped, it prints plain lines only.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import platform
import shutil
import statistics
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TextIO

import anyio
import anyio.to_process

from procio import LineReceiveStream, open_process, run_process, to_process

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

# Run by `python -c` for each cold start: one event loop, one worker call, timed inside.
_COLD_START = """\
import operator, sys, time
import anyio
if sys.argv[1] == "procio":
    from procio import to_process
else:
    from anyio import to_process


async def first_call():
    start = time.perf_counter()
    await to_process.run_sync(operator.index, 1)
    return time.perf_counter() - start


print(anyio.run(first_call, backend=sys.argv[2]))
"""

SPAWNS = 40
COLD_STARTS = 3
ROUND_TRIPS = 300
ROUNDS = 3  # the round trips alternate between the two libraries, in this many rounds

Call = Callable[..., Awaitable[Any]]


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


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms" if seconds < 0.1 else f"{seconds * 1e3:.0f} ms"
    return f"{seconds:.2f} s"


def _versus(ours: float, theirs: float) -> str:
    """Compare two durations, lower being better: ``2.1x faster`` or ``1.2x slower``."""
    if ours <= theirs:
        return f"{theirs / ours:.1f}x faster" if ours > 0 else "faster"
    return f"{ours / theirs:.1f}x slower"


def _comparison(what: str, ours: float, theirs: float) -> str:
    return (
        f"   {what}\n"
        f"      procio {_duration(ours):>9}    AnyIO {_duration(theirs):>9}"
        f"    procio is {_versus(ours, theirs)}"
    )


async def _timed(call: Call, *args: Any) -> float:
    start = time.perf_counter()
    await call(*args)
    return time.perf_counter() - start


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
        await self.one_shot()
        self.say()
        await self.lines()
        self.say()
        await self.workers()

    # -- processes --------------------------------------------------------------------

    async def one_shot(self) -> None:
        """Run a command to completion, then time spawns beside AnyIO's."""
        self.say("1. A one-shot command: run_process() runs it and collects its output")
        command = [sys.executable, "-c", "import platform; print(platform.platform())"]
        result = await run_process(command)
        self.say(f"   python -c 'print(platform.platform())' -> exit {result.returncode}")
        self.say(f"   stdout: {result.stdout.decode().strip()!r}")

        true = shutil.which("true")
        if true is None:
            self.say("   (no `true` command here: skipping the spawn timing)")
            return
        ours: list[float] = []
        theirs: list[float] = []
        async with progress(self.out, f"spawning {true}", 2 * SPAWNS) as bar:
            for _ in range(SPAWNS):
                ours.append(await _timed(run_process, [true]))
                bar.advance()
                theirs.append(await _timed(anyio.run_process, [true]))
                bar.advance()
        self.say(
            _comparison(
                f"spawn {true} and wait for it, median of {SPAWNS}:",
                statistics.median(ours),
                statistics.median(theirs),
            )
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

    async def workers(self) -> None:
        """Call functions in worker processes, timed beside AnyIO's to_process."""
        self.say("3. Python functions in worker processes, beside anyio.to_process")
        worker_pid = await to_process.run_sync(os.getpid)
        self.say(f"   to_process.run_sync(os.getpid) -> {worker_pid} (this process: {os.getpid()})")

        ours: list[float] = []
        theirs: list[float] = []
        async with progress(self.out, "starting fresh workers", 2 * COLD_STARTS) as bar:
            for _ in range(COLD_STARTS):
                ours.append(await self._cold_start("procio"))
                bar.advance()
                theirs.append(await self._cold_start("anyio"))
                bar.advance()
        self.say(
            _comparison(
                f"cold start to the first result, median of {COLD_STARTS}:",
                statistics.median(ours),
                statistics.median(theirs),
            )
        )

        # Warm both pools up so that only round trips to a running worker are timed.
        for _ in range(5):
            await to_process.run_sync(operator.index, 1)
            await anyio.to_process.run_sync(operator.index, 1)
        ours, theirs = [], []
        per_round = ROUND_TRIPS // ROUNDS
        async with progress(self.out, "calling f(x) = x", 2 * per_round * ROUNDS) as bar:
            for _ in range(ROUNDS):
                for _ in range(per_round):
                    ours.append(await _timed(to_process.run_sync, operator.index, 1))
                    bar.advance()
                for _ in range(per_round):
                    theirs.append(await _timed(anyio.to_process.run_sync, operator.index, 1))
                    bar.advance()
        self.say(
            _comparison(
                f"round trip of f(x) = x, median of {per_round * ROUNDS} calls:",
                statistics.median(ours),
                statistics.median(theirs),
            )
        )

        try:
            await to_process.run_sync(json.loads, '{"x": }')
        except ValueError as error:
            self.say("   an exception raised in a worker comes back with its own traceback:")
            self.say(f"      {type(error).__module__}.{type(error).__qualname__}: {error}")
            remote = str(getattr(error.__cause__, "traceback", ""))
            frames = [line.strip() for line in remote.splitlines() if line.startswith("  File ")]
            if frames:
                self.say(f"      raised at {frames[-1].removeprefix('File ')}")

    async def _cold_start(self, library: str) -> float:
        """Time the first worker call of *library* in a fresh interpreter of its own.

        Each library keeps one pool per event loop, so a fresh loop has no worker yet.
        The loop runs in a child interpreter, which times the call itself (its own start
        and imports are not counted), so that no pool outlives its loop in this process.
        """
        command = [sys.executable, "-c", _COLD_START, library, self.backend]
        result = await run_process(command)
        return float(result.stdout)


def _procio_version() -> str:
    try:
        return version("procio")
    except PackageNotFoundError:  # pragma: no cover - running from a bare checkout
        return "(not installed)"


def main(argv: list[str] | None = None) -> None:
    """Run the tour on asyncio, or on Trio with ``--trio``."""
    parser = argparse.ArgumentParser(
        prog="python -m procio", description="A short live tour of what procio does."
    )
    parser.add_argument("--trio", action="store_true", help="run on Trio instead of asyncio")
    args = parser.parse_args(argv)
    backend = "trio" if args.trio else "asyncio"
    out = sys.stdout
    started = time.perf_counter()
    out.write(
        f"procio {_procio_version()} on {backend}, Python {platform.python_version()}, "
        f"{platform.system()}, {os.cpu_count()} CPUs\n\n"
    )
    demo = Demo(out, backend)
    anyio.run(demo.run, backend=backend)
    out.write(f"\nDone in {time.perf_counter() - started:.1f} s.\n")
    out.flush()


# Worker processes import this module as __mp_main__: only a real run starts the tour.
if __name__ == "__main__":
    main()
