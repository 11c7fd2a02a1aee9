"""Benchmarks of the worker layer: procio beside AnyIO, the floors and other pools.

    python benchmarks/bench_workers.py [--quick] [--json PATH]

The function is ``copy.copy``, which returns ints and ``bytes`` as they are, so it is
``f(x) = x`` and importable by every library. Every contender is started once and kept
warm; then the figures are sampled in interleaved rounds (see ``_harness``). An async
contender keeps its own event loop running in a thread (an AnyIO blocking portal), and
a whole sample runs inside that loop: the thread hop happens once per sample, not once
per call.

Figures:

- ``round-trip``: ``f(x) = x`` with small ints, sequential, on a warm worker: calls per
  second, and the CPU per call of the parent (``time.process_time``) and of the worker
  processes (from ``/proc``, see ``_harness.task_cpu_seconds``). Two floors: a pipe
  ping-pong between two plain processes (4-byte length, then ``pickle.dumps((f,
  args))`` one way and the pickled result back), once with blocking reads and once
  with both sides busy-polling, as procio does (the parent spins until the reply is
  there; the child spins for 200 µs after each answer, then blocks). Beside them, the
  busy-polling ping-pong with an async caller that passes once through its event loop
  per call (:class:`AsyncPingPong`): the least an awaited call costs here.
- ``echo``: a 32 MiB ``bytes`` argument to a warm worker and back, MB/s of one
  direction's size. The floor sends the raw bytes through two blocking pipes grown to
  1 MiB (as procio's are), each side reading into fresh memory offered huge pages (as
  procio offers them): a fresh object on both sides, as every contender must build,
  and no copy but the kernel's. The pickle ping-pong of the round trip is shown beside
  it.
- ``sporadic-cpu``: one call every 2 ms (a worker that has gone back to sleep between
  calls): parent-plus-worker CPU per call, and each side alone. ``SPORADIC_SETTINGS``
  lists the procio settings to measure; a polling knob, once procio has one, is one
  more entry there.
- ``concurrent``: 8 concurrent callers, each making sequential calls, on each library's
  default number of workers (one per CPU).
- ``cold-start`` and ``cold-start-heavy``: a fresh interpreter per sample (``_cold.py``
  and ``_cold_heavy.py`` as its ``__main__``), timed from opening a fresh event loop or
  executor to the first result, pool start included; the floor is ``python -c pass``.
- ``pipe-size-round-trip`` and ``pipe-size-echo``: procio with its two pipes per worker
  grown to 64 KiB, 256 KiB or 1 MiB, to choose the default by measurement.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import copy
import fcntl
import functools
import importlib
import importlib.util
import mmap
import os
import pickle
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.from_thread
import anyio.lowlevel
import anyio.to_process
from procio_workers import to_process

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _harness import Clock, Row, calibrate, children, parser, report, rounds

HERE = Path(__file__).resolve().parent

MiB = 1024 * 1024
CALLERS = 8
SPORADIC_INTERVAL = 0.002
func = copy.copy


def _size(size: int) -> str:
    return f"{size >> 20} MiB" if size >= MiB else f"{size >> 10} KiB"


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


@contextlib.contextmanager
def procio_pipe_size(size: int) -> Iterator[None]:
    """Grow the pipes of the procio workers started inside this block to *size* bytes.

    procio has no public setting for it (yet): this sets the worker backend's private
    constant, for this benchmark only, while the contender starts its worker.
    """
    backend: Any = importlib.import_module("procio_workers._process_backend")
    old = backend._PIPE_SIZE
    backend._PIPE_SIZE = size
    try:
        yield
    finally:
        backend._PIPE_SIZE = old


@contextlib.contextmanager
def procio_idle_poll(setting: float | str) -> Iterator[None]:
    """Give the procio pools started inside this block ``idle_poll=setting``.

    ``to_process.run_sync`` builds its default pool with the default setting: this
    changes that default, for this benchmark only, while the contender starts its pool.
    """
    workers: Any = importlib.import_module("procio_workers")
    defaults = workers.WorkerPool.__init__.__kwdefaults__
    old = defaults["idle_poll"]
    defaults["idle_poll"] = setting
    try:
        yield
    finally:
        defaults["idle_poll"] = old


# Each entry: (row name suffix, context manager applied while procio's pool starts).
# One entry per setting to compare in the sporadic-calls figure.
SPORADIC_SETTINGS: list[tuple[str, Callable[[], contextlib.AbstractContextManager[None]]]] = [
    ("", contextlib.nullcontext),
    ("idle_poll=0", functools.partial(procio_idle_poll, 0)),
    ("idle_poll=200e-6 (fixed)", functools.partial(procio_idle_poll, 200e-6)),
]


class Contender:
    """One library (or floor) kept warm across samples.

    Attributes:
        name: the row name.
        role: the row role (see ``_harness.Row``).
        clock: reads wall, parent CPU and the CPU of this contender's workers.
    """

    def __init__(self, name: str, role: str) -> None:
        self.name = name
        self.role = role
        self.clock = Clock()

    def start(self) -> None:
        """Start the workers and make one call; note which processes are the workers."""
        before = children()
        self._start()
        with self._starting():
            self.call(0)
        self.clock = Clock(frozenset(children() - before))

    def _starting(self) -> contextlib.AbstractContextManager[None]:
        """A block around the first call, which starts the worker."""
        return contextlib.nullcontext()

    def _start(self) -> None:
        raise NotImplementedError

    def call(self, x: object) -> object:
        raise NotImplementedError

    def calls(self, count: int) -> None:
        for x in range(count):
            self.call(x)

    def sporadic(self, count: int) -> None:
        next_call = time.perf_counter()
        for x in range(count):
            next_call += SPORADIC_INTERVAL
            time.sleep(max(0.0, next_call - time.perf_counter()))
            self.call(x)

    def concurrent(self, calls_each: int) -> None:
        with concurrent.futures.ThreadPoolExecutor(CALLERS) as threads:
            for future in [threads.submit(self.calls, calls_each) for _ in range(CALLERS)]:
                future.result()

    def close(self) -> None:
        raise NotImplementedError


class AsyncContender(Contender):
    """``run(func, x)`` awaited on an event loop that runs in its own thread."""

    def __init__(
        self,
        name: str,
        role: str,
        backend: str,
        run: Callable[..., Any] | None = None,
        setting: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext,
        backend_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, role)
        self._backend = backend
        self._backend_options = backend_options
        self._run = run
        self._setting = setting
        self._stack = contextlib.ExitStack()

    def _start(self) -> None:
        self.portal = self._stack.enter_context(
            anyio.from_thread.start_blocking_portal(self._backend, self._backend_options)
        )
        self._enter()

    def _starting(self) -> contextlib.AbstractContextManager[None]:
        return self._setting()

    def _enter(self) -> None:
        """Open what the calls need, in the portal (trio-parallel opens a context here)."""

    def _async_run(self) -> Callable[..., Any]:
        assert self._run is not None
        return self._run

    def call(self, x: object) -> object:
        return self.portal.call(self._async_run(), func, x)

    async def _calls(self, count: int) -> None:
        run = self._async_run()
        for x in range(count):
            await run(func, x)

    def calls(self, count: int) -> None:
        self.portal.call(self._calls, count)

    async def _sporadic(self, count: int) -> None:
        run = self._async_run()
        next_call = anyio.current_time()
        for x in range(count):
            next_call += SPORADIC_INTERVAL
            await anyio.sleep_until(next_call)
            await run(func, x)

    def sporadic(self, count: int) -> None:
        self.portal.call(self._sporadic, count)

    async def _concurrent(self, calls_each: int) -> None:
        async with anyio.create_task_group() as tg:
            for _ in range(CALLERS):
                tg.start_soon(self._calls, calls_each)

    def concurrent(self, calls_each: int) -> None:
        self.portal.call(self._concurrent, calls_each)

    def close(self) -> None:
        self._stack.close()


class TrioParallel(AsyncContender):
    def __init__(self) -> None:
        super().__init__("trio-parallel", "other", "trio")

    def _enter(self) -> None:
        trio_parallel: Any = importlib.import_module("trio_parallel")
        self._ctx = self._stack.enter_context(
            self.portal.wrap_async_context_manager(trio_parallel.open_worker_context())
        )

    def _async_run(self) -> Callable[..., Any]:
        return self._ctx.run_sync  # type: ignore[no-any-return]


class ExecutorContender(Contender):
    """``executor.submit(func, x).result()``, blocking, with one worker per CPU."""

    def __init__(self, name: str, make: Callable[[int], concurrent.futures.Executor]) -> None:
        super().__init__(name, "other")
        self._make = make

    def _start(self) -> None:
        self._executor = self._make(os.cpu_count() or 2)

    def call(self, x: object) -> object:
        return self._executor.submit(func, x).result()

    def close(self) -> None:
        self._executor.shutdown()


class PipeChild(Contender):
    """A floor run as a plain Python child that talks over its stdin and stdout pipes."""

    def _spawn(self, program: str, *args: str) -> None:
        self._child = subprocess.Popen(
            [sys.executable, "-c", program, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        self._w, self._r = self._child.stdin.fileno(), self._child.stdout.fileno()

    def _write_all(self, data: memoryview) -> None:
        while data:
            data = data[os.write(self._w, data) :]

    def close(self) -> None:
        assert self._child.stdin is not None
        assert self._child.stdout is not None
        self._child.stdin.close()
        self._child.wait()
        self._child.stdout.close()


PING_PONG_CHILD = r"""
import os, pickle, select, struct, sys, time
busy = sys.argv[1] == "busy"
SPIN = 200e-6
if busy:
    os.set_blocking(0, False)
deadline = 0.0
def read_some(n):
    if not busy:
        return os.read(0, n)
    while True:
        try:
            return os.read(0, n)
        except BlockingIOError:
            if time.perf_counter() > deadline:
                select.select([0], [], [])
def read_exact(n):
    parts = []
    while n:
        chunk = read_some(n)
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
    deadline = time.perf_counter() + SPIN
"""


class PingPong(PipeChild):
    """The floor: two plain processes and two pipes, blocking or busy-polling."""

    def __init__(self, busy: bool) -> None:
        name = "floor: pipe ping-pong, " + ("both sides busy-poll" if busy else "blocking")
        super().__init__(name, "floor" if busy else "floor-2")
        self._busy = busy

    def _start(self) -> None:
        self._spawn(PING_PONG_CHILD, "busy" if self._busy else "block")
        if self._busy:
            os.set_blocking(self._r, False)

    def _read_exact(self, n: int) -> bytes:
        parts = []
        while n:
            try:
                chunk = os.read(self._r, n)
            except BlockingIOError:
                continue  # busy-poll: spin until the reply is there
            if not chunk:
                raise EOFError("the ping-pong child has gone")
            parts.append(chunk)
            n -= len(chunk)
        return b"".join(parts)

    def call(self, x: object) -> object:
        request = pickle.dumps((func, (x,)), 5)
        self._write_all(memoryview(struct.pack(">I", len(request)) + request))
        (size,) = struct.unpack(">I", self._read_exact(4))
        return pickle.loads(self._read_exact(size))


class AsyncPingPong(PingPong):
    """The busy-polling ping-pong with an async caller: one pass of its event loop a call.

    No contender and no floor: what an awaited call costs at the least here. Each call
    sends its request, passes once through the event loop (AnyIO's ``checkpoint``, the
    schedule point every awaited call has, put where procio puts it: while the child
    works), then spins until the reply is there. What procio's round trip spends beyond
    this row is procio's own work per call, not the event loop's.
    """

    def __init__(self) -> None:
        super().__init__(busy=True)
        self.name = "bare async ping-pong: busy-poll, one pass of the event loop a call (asyncio)"
        self.role = "other"
        self._stack = contextlib.ExitStack()

    def _start(self) -> None:
        super()._start()
        self.portal = self._stack.enter_context(anyio.from_thread.start_blocking_portal("asyncio"))

    async def _calls(self, count: int) -> None:
        # PingPong.call's steps, written out with the checkpoint between its halves:
        # split into methods, the floor's own call would pay two more calls per round
        # trip, on the very path it times.
        for x in range(count):
            request = pickle.dumps((func, (x,)), 5)
            self._write_all(memoryview(struct.pack(">I", len(request)) + request))
            await anyio.lowlevel.checkpoint()
            (size,) = struct.unpack(">I", self._read_exact(4))
            if pickle.loads(self._read_exact(size)) != x:
                raise AssertionError(f"the ping-pong child answered {x} wrongly")

    def calls(self, count: int) -> None:
        self.portal.call(self._calls, count)

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._stack.close()


ECHO_CHILD = r"""
import fcntl, mmap, os, struct
for fd in (0, 1):
    try:
        fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)
    except (AttributeError, OSError):
        pass
def fresh(size):
    buffer = mmap.mmap(-1, max(size, 1))
    if hasattr(mmap, "MADV_HUGEPAGE"):
        buffer.madvise(mmap.MADV_HUGEPAGE)
    return buffer
def read_into(view):
    got = 0
    while got < len(view):
        count = os.readv(0, [view[got:]])
        if not count:
            raise SystemExit(0)
        got += count
while True:
    header = bytearray(4)
    read_into(memoryview(header))
    (size,) = struct.unpack(">I", header)
    view = memoryview(fresh(size))[:size]
    read_into(view)
    while view:
        view = view[os.write(1, view) :]
"""


class EchoFloor(PipeChild):
    """The echo floor: raw bytes through two pipes, no serializer, no copy but the kernel's.

    Both sides block, with the pipes grown to 1 MiB as procio grows its own. Each side
    reads a message into fresh memory (an anonymous mapping, offered huge pages as procio
    offers them for large objects) and the child writes it back from there: a fresh
    object on both sides, as every contender must build, one copy per direction in the
    kernel, nothing else.
    """

    def __init__(self) -> None:
        super().__init__("floor: raw bytes through two pipes, blocking", "floor")

    def start(self) -> None:
        self._start()
        self.call(b"")
        self.clock = Clock(frozenset({self._child.pid}))

    def _start(self) -> None:
        self._spawn(ECHO_CHILD)
        for fd in (self._w, self._r):
            with contextlib.suppress(AttributeError, OSError):
                fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, 1 << 20)

    def call(self, x: object) -> object:
        data = memoryview(x)  # type: ignore[arg-type]
        self._write_all(memoryview(struct.pack(">I", data.nbytes)))
        self._write_all(data)
        size = data.nbytes
        fresh = mmap.mmap(-1, max(size, 1))
        if hasattr(mmap, "MADV_HUGEPAGE"):
            fresh.madvise(mmap.MADV_HUGEPAGE)
        back, got = memoryview(fresh)[:size], 0
        while got < size:
            count = os.readv(self._r, [back[got:]])
            if not count:
                raise EOFError("the echo child has gone")
            got += count
        return back


# -- sampling ---------------------------------------------------------------------------


def _row(figure: str, title: str, c: Contender, unit: str) -> Row:
    # A rate (calls/s, MB/s) is better higher; a time (µs of CPU) lower.
    return Row(figure, title, "workers", c.name, c.role, unit, unit.endswith("/s"))


ROUND_TRIP_NOTE = (
    "Floors: a pipe ping-pong of two plain processes with pickle, once with both sides "
    "busy-polling as procio does, once with blocking reads."
)


def round_trip_rows(contenders: Sequence[Contender], repeats: int, seconds: float) -> list[Row]:
    title = "worker round trip f(x) = x, sequential"
    rate = {c.name: _row("round-trip", title, c, "calls/s") for c in contenders}
    parent = {
        c.name: _row("round-trip-cpu-parent", title + ": parent CPU per call", c, "µs")
        for c in contenders
    }
    worker = {
        c.name: _row("round-trip-cpu-worker", title + ": worker CPU per call", c, "µs")
        for c in contenders
    }
    rate[contenders[0].name].note = ROUND_TRIP_NOTE
    by_name = {c.name: c for c in contenders}
    loops = {}
    for c in contenders:

        def batch(n: int, c: Contender = c) -> float:
            start = time.perf_counter()
            c.calls(n)
            return time.perf_counter() - start

        loops[c.name] = calibrate(batch, seconds, start=10)
    for _, name in rounds(repeats, list(by_name)):
        c, n = by_name[name], loops[name]
        wall0, cpu0, workers0 = c.clock.read()
        c.calls(n)
        wall1, cpu1, workers1 = c.clock.read()
        rate[name].samples.append(n / (wall1 - wall0))
        parent[name].samples.append((cpu1 - cpu0) / n * 1e6)
        worker[name].samples.append((workers1 - workers0) / n * 1e6)
    return [*rate.values(), *parent.values(), *worker.values()]


def echo_rows(
    contenders: Sequence[Contender], repeats: int, size: int, figure: str = "echo"
) -> list[Row]:
    data = os.urandom(size)
    title = f"worker {size >> 20} MiB bytes echoed" + (", by pipe size" if "pipe" in figure else "")
    rows = {c.name: _row(figure, title, c, "MB/s") for c in contenders}
    for row in rows.values():
        if row.role == "floor-2":  # the pickle ping-pong: shown, the raw echo is the floor
            row.role = "other"
    by_name = {c.name: c for c in contenders}
    for c in contenders:
        c.call(data)  # warm: the first large message may grow buffers
    for _, name in rounds(repeats, list(by_name)):
        start = time.perf_counter()
        back = by_name[name].call(data)
        took = time.perf_counter() - start
        assert back == data
        rows[name].samples.append(size / 1e6 / took)
    return list(rows.values())


def sporadic_rows(contenders: Sequence[Contender], repeats: int, count: int) -> list[Row]:
    title = f"sporadic calls, one every {SPORADIC_INTERVAL * 1e3:g} ms"
    total = {
        c.name: _row("sporadic-cpu", title + ": parent + worker CPU per call", c, "µs")
        for c in contenders
    }
    parent = {
        c.name: _row("sporadic-cpu-parent", title + ": parent CPU per call", c, "µs")
        for c in contenders
    }
    worker = {
        c.name: _row("sporadic-cpu-worker", title + ": worker CPU per call", c, "µs")
        for c in contenders
    }
    by_name = {c.name: c for c in contenders}
    for _, name in rounds(repeats, list(by_name)):
        c = by_name[name]
        _, cpu0, workers0 = c.clock.read()
        c.sporadic(count)
        _, cpu1, workers1 = c.clock.read()
        parent[name].samples.append((cpu1 - cpu0) / count * 1e6)
        worker[name].samples.append((workers1 - workers0) / count * 1e6)
        total[name].samples.append(parent[name].samples[-1] + worker[name].samples[-1])
    return [*total.values(), *parent.values(), *worker.values()]


def concurrent_rows(contenders: Sequence[Contender], repeats: int, calls_each: int) -> list[Row]:
    title = f"worker calls/s, {CALLERS} concurrent callers"
    rows = {c.name: _row("concurrent", title, c, "calls/s") for c in contenders}
    by_name = {c.name: c for c in contenders}
    for c in contenders:
        c.concurrent(2)
    for _, name in rounds(repeats, list(by_name)):
        start = time.perf_counter()
        by_name[name].concurrent(calls_each)
        rows[name].samples.append(CALLERS * calls_each / (time.perf_counter() - start))
    return list(rows.values())


COLD_CONTENDERS = [
    ("procio", "procio (asyncio)", "subject"),
    ("anyio", "anyio.to_process (asyncio)", "anyio"),
    ("procio-trio", "procio (trio)", "other"),
    ("trio-parallel", "trio-parallel", "other"),
    ("loky", "loky", "other"),
    ("ProcessPoolExecutor-fork", "ProcessPoolExecutor (fork)", "other"),
    ("ProcessPoolExecutor-forkserver", "ProcessPoolExecutor (forkserver)", "other"),
    ("ProcessPoolExecutor-spawn", "ProcessPoolExecutor (spawn)", "other"),
    ("floor", "floor: python -c pass", "floor"),
]


COLD_NOTE = (
    "AnyIO's workers import the parent's `__main__` module as they start (eagerly), as "
    "do ProcessPoolExecutor's spawn and forkserver methods; procio's import it only "
    "when a call's function lives there (lazily)."
)


def cold_rows(repeats: int) -> list[Row]:
    available = [
        entry
        for entry in COLD_CONTENDERS
        if entry[0] not in ("trio-parallel", "loky") or _have(entry[0].replace("-", "_"))
    ]
    rows: list[Row] = []
    for figure, script, what in (
        ("cold-start", "_cold.py", "trivial `__main__`"),
        ("cold-start-heavy", "_cold_heavy.py", "`__main__` importing hypothesis"),
    ):
        title = f"worker cold start to first result, {what}"
        by_key = {
            key: Row(figure, title, "workers", name, role, "ms", higher_is_better=False)
            for key, name, role in available
        }
        by_key["procio"].note = COLD_NOTE
        for _, key in rounds(repeats, list(by_key)):
            out = subprocess.run(
                [sys.executable, str(HERE / script), key],
                check=True,
                capture_output=True,
                text=True,
                cwd=HERE,
            )
            by_key[key].samples.append(float(out.stdout.split()[-1]))
        rows += by_key.values()
    return rows


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    if args.quick:
        repeats, seconds, echo_mib, sporadic, calls_each, cold = 2, 0.01, 2, 20, 20, 1
    else:
        repeats, seconds, echo_mib, sporadic, calls_each, cold = 7, 0.1, 32, 250, 250, 3

    sequential: list[Contender] = [
        AsyncContender("procio (asyncio)", "subject", "asyncio", to_process.run_sync),
        AsyncContender("anyio.to_process (asyncio)", "anyio", "asyncio", anyio.to_process.run_sync),
        PingPong(busy=True),
        PingPong(busy=False),
        AsyncPingPong(),
        AsyncContender("procio (trio)", "other", "trio", to_process.run_sync),
    ]
    if _have("trio_parallel"):
        sequential.append(TrioParallel())
    if _have("loky"):
        loky: Any = importlib.import_module("loky")
        sequential.append(ExecutorContender("loky", lambda n: loky.ProcessPoolExecutor(n)))
    sequential.append(
        ExecutorContender(
            "ProcessPoolExecutor", lambda n: concurrent.futures.ProcessPoolExecutor(n)
        )
    )
    sporadic_extra = [
        AsyncContender(
            f"procio (asyncio), {label}", "other", "asyncio", to_process.run_sync, setting
        )
        for label, setting in SPORADIC_SETTINGS
        if label
    ]
    pipe_sizes = [
        AsyncContender(
            f"procio (asyncio), pipes of {_size(size)}",
            "other",
            "asyncio",
            to_process.run_sync,
            functools.partial(procio_pipe_size, size),
        )
        for size in (64 << 10, 256 << 10, 1 << 20)
    ]
    echo_floor = EchoFloor()
    everyone = [*sequential, *sporadic_extra, *pipe_sizes, echo_floor]
    rows: list[Row] = []
    with contextlib.ExitStack() as stack:
        for c in everyone:
            c.start()
            stack.callback(c.close)
        rows += round_trip_rows(sequential, repeats, seconds)
        rows += echo_rows(
            [
                *(c for c in sequential if c.role != "floor" and not isinstance(c, AsyncPingPong)),
                echo_floor,
            ],
            repeats,
            echo_mib * MiB,
        )
        rows += sporadic_rows([*sequential[:4], *sporadic_extra], repeats, sporadic)
        rows += concurrent_rows(
            [c for c in sequential if not isinstance(c, PingPong)], repeats, calls_each
        )
        pipe_rows = round_trip_rows(pipe_sizes, repeats, seconds)[: len(pipe_sizes)]
        for row in pipe_rows:
            row.figure = "pipe-size-round-trip"
            row.title = "worker round trip f(x) = x, sequential, by pipe size"
        rows += pipe_rows
        rows += echo_rows(pipe_sizes, repeats, echo_mib * MiB, "pipe-size-echo")
    rows += cold_rows(cold)
    report(rows, args.json)


if __name__ == "__main__":
    main()
