"""Conformance kit: check a third-party serializer, launcher, backend or worker program.

Call these from your own test suite; each raises :exc:`AssertionError` describing the
first deviation from the contract of the pages "Extending procio-workers" and "The
worker protocol"::

    def test_serializer() -> None:
        check_serializer(MySerializer())


    async def test_launcher() -> None:
        await check_launcher(MyLauncher())
"""

from __future__ import annotations

import base64
import errno
import itertools
import json
import operator
import os
import select
import signal
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import anyio

from . import _wire
from ._errors import BrokenWorkerProcess, RemoteTraceback, SerializationError
from ._pool import WorkerPool
from ._process_backend import BOOTSTRAP, WORKER_PROGRAM
from ._serializers import PickleSerializer
from .abc import Buffer, Launcher, Serializer, Worker, WorkerBackend

__all__ = [
    "JSON_SAMPLES",
    "WORKER_FORBIDDEN_IMPORTS",
    "check_serializer",
    "check_codec_imports",
    "check_launcher",
    "check_backend",
    "check_frame_limits",
    "check_worker_command",
    "python_worker_command",
]

#: Values every serializer must carry, JSON-compatible so any codec can.
JSON_SAMPLES: tuple[object, ...] = (
    None,
    True,
    0,
    -(2**40),
    2.5,
    "",
    "text with ünïcode",
    [1, "two", [3.0, None]],
    {"key": [1, 2], "other": {"nested": "yes"}},
)


#: Top-level packages a worker codec must not import: the worker program keeps them out so
#: that a worker starts as fast as a bare interpreter. ``procio_workers.codecs`` (and the
#: package's own ``__init__``, which imports no more than it) are allowed all the same.
WORKER_FORBIDDEN_IMPORTS: tuple[str, ...] = ("anyio", "procio_workers")

# Run in a fresh interpreter (``-X importtime``), as the worker program would: take the
# parent's sys.path, import the codec by name, build it, decode a call, run it, encode
# its result and an exception. Prints the modules all that imported, as JSON, on a last
# line of its own (the codec may print too).
_CODEC_PROBE = """\
import base64, json, sys
request = json.loads(sys.stdin.read())
sys.path[:] = request["sys_path"]
before = set(sys.modules)
module_name, _, attribute = request["codec"].partition(":")
__import__(module_name)  # not importlib.import_module, which -X importtime does not see
factory = sys.modules[module_name]
for part in attribute.split("."):
    factory = getattr(factory, part)
codec = factory()
func, args = codec.loads([bytearray(base64.b64decode(s)) for s in request["call"]])
codec.dumps(func(*args))
codec.dumps(ValueError("boom"))
sys.stdout.write("\\n" + json.dumps(sorted(set(sys.modules) - before)))
"""


def _import_chain(importtime: str, target: str) -> list[str]:
    """Return who imported *target*, outermost first, from ``-X importtime`` output."""
    rows: list[tuple[int, str]] = []
    for line in importtime.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        name_field = line.rsplit("|", 1)[-1]
        name = name_field.strip()
        rows.append(((len(name_field) - len(name_field.lstrip()) - 1) // 2, name))
    found = [index for index, (_, name) in enumerate(rows) if name == target]
    if not found:
        return [target]
    # The tree is printed innermost first: a module's importer is the next row that
    # is one level further out.
    index = found[0]
    depth = rows[index][0]
    chain = [target]
    for later_depth, name in rows[index + 1 :]:
        if later_depth < depth:
            chain.append(name)
            depth = later_depth
    chain.reverse()
    # Importing "package.module" shows as a row for it around a row for "package":
    # keep the package, then the module, as the imports really ran.
    tidy: list[str] = []
    for position, name in enumerate(chain):
        following = chain[position + 1] if position + 1 < len(chain) else ""
        if (following and name.startswith(f"{following}.")) or name in tidy:
            continue
        tidy.append(name)
    return tidy


#: Modules a codec may import although their package is forbidden: they import the
#: standard library only (the package's ``__init__`` loads its other names on first use),
#: and ``procio_workers.codecs`` is there for codecs to build on.
_CODEC_SAFE_MODULES = frozenset({"procio_workers", "procio_workers.codecs", "procio_workers._wire"})


def _is_under(module: str, packages: Sequence[str]) -> bool:
    if module in _CODEC_SAFE_MODULES:
        return False
    return any(module == top or module.startswith(f"{top}.") for top in packages)


def check_codec_imports(
    serializer: Serializer,
    *,
    forbidden: Sequence[str] = WORKER_FORBIDDEN_IMPORTS,
    python: str | None = None,
    timeout: float = 30.0,
) -> None:
    """Check that the worker half of *serializer* keeps heavy packages out of the worker.

    The codec named by ``serializer.worker_codec`` runs inside every worker, so the
    modules it imports (and the ``__init__`` of every package above it) are imported
    by every worker as it starts. In a fresh interpreter with the parent's
    ``sys.path``, the check imports the codec, decodes a call made by
    :meth:`~procio_workers.abc.Serializer.dump_call`, runs it and encodes its result
    and an exception; none of that may import a package named in *forbidden*. The
    built-in codecs (``"pickle"``, ``"cloudpickle"``) are part of the worker program
    and pass without a check.

    Args:
        serializer: the serializer whose codec to check.
        forbidden: the top-level packages the codec must not import (default:
            :data:`WORKER_FORBIDDEN_IMPORTS`).
        python: the interpreter the workers run (default: this one).
        timeout: seconds the fresh interpreter may take.
    """
    codec = serializer.worker_codec
    if codec in ("pickle", "cloudpickle"):
        return
    call = serializer.dump_call(operator.add, (2, 3))
    request = {
        "sys_path": [os.path.abspath(entry) for entry in sys.path],
        "codec": codec,
        "call": [base64.b64encode(memoryview(s).cast("B")).decode("ascii") for s in call],
    }
    try:
        probe = subprocess.run(
            [python or sys.executable, "-X", "importtime", "-c", _CODEC_PROBE],
            input=json.dumps(request).encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the worker codec {codec!r} took over {timeout} s to load and use"
        ) from None
    stderr = probe.stderr.decode("utf-8", "replace")
    if probe.returncode != 0:
        problem = [line for line in stderr.splitlines() if not line.startswith("import time:")]
        raise AssertionError(
            f"the worker codec {codec!r} failed in a fresh interpreter: " + "\n".join(problem)
        )
    imported = json.loads(probe.stdout.splitlines()[-1])
    offending = sorted(name for name in imported if _is_under(name, forbidden))
    if offending:
        tops = sorted({name.partition(".")[0] for name in offending})
        chain = _import_chain(stderr, offending[0])
        # Down to the first forbidden module on the way: the import to remove.
        first = next(i for i, name in enumerate(chain) if _is_under(name, forbidden))
        path = " -> ".join(chain[: first + 1])
        raise AssertionError(
            f"the worker codec {codec!r} imports {', '.join(tops)} into every worker "
            f"(through {path}); a codec runs inside the worker and may import "
            "only what the worker program needs: keep it in a module whose packages "
            "import none of these"
        )


def _load_codec(name: str) -> Any:
    if name in ("pickle", "cloudpickle"):
        return _wire.builtin_codec(name)
    return _wire.import_object(name)()


def _as_received(segments: Sequence[Any]) -> list[bytearray]:
    return [bytearray(memoryview(segment).cast("B")) for segment in segments]


def _as_views(segments: Sequence[Any]) -> list[memoryview]:
    return [memoryview(bytearray(memoryview(segment).cast("B"))) for segment in segments]


def check_serializer(
    serializer: Serializer,
    samples: Sequence[object] = JSON_SAMPLES,
    func: Callable[..., object] = operator.add,
) -> None:
    """Check that *serializer* and its worker codec agree, and that the codec is light.

    First :func:`check_codec_imports` (in a fresh interpreter); then, in this process,
    every sample travels as a call argument (parent to worker) and back as a result
    (worker to parent), and an exception travels back too.

    Args:
        serializer: the serializer to check.
        samples: the values to send both ways; they must compare equal after the trip
            (JSON-compatible values by default, which any codec must support).
        func: an importable function to send by reference.
    """
    assert isinstance(serializer, Serializer), "a serializer subclasses abc.Serializer"
    assert isinstance(serializer.worker_codec, str), "worker_codec is a codec name"
    check_codec_imports(serializer)
    codec = _load_codec(serializer.worker_codec)
    for method in ("loads", "dumps"):
        assert callable(getattr(codec, method, None)), f"the worker codec has no {method}()"
    for value in samples:
        segments = serializer.dump_call(func, (value, value))
        assert len(segments) >= 1, "dump_call() returns at least one segment"
        received_func, received_args = codec.loads(_as_received(segments))
        assert received_func is func, f"the function came out as {received_func!r}"
        assert tuple(received_args) == (value, value), f"{value!r} came out as {received_args!r}"
        reply = serializer.load_reply(_as_views(codec.dumps(value)))
        assert reply == value, f"the result {value!r} came back as {reply!r}"
    error = serializer.load_reply(_as_views(codec.dumps(ValueError("boom"))))
    assert isinstance(error, ValueError), f"an exception came back as {error!r}"
    assert str(error) == "boom", f"an exception's message came back as {str(error)!r}"


async def check_backend(factory: Callable[[], WorkerBackend], *, workers: int = 2) -> None:
    """Check a worker backend through a real :class:`~procio_workers.WorkerPool`.

    Each part runs in a pool of its own, in this order:

    - calls return their results and raise their exceptions, concurrently, and the
      pool's figures count them; no worker outlives the pool;
    - bad input: an argument that cannot be serialized raises
      :exc:`~procio_workers.SerializationError` and breaks no worker; a result that
      cannot be serialized raises it too, and the worker takes the next call;
    - large ``bytes``, ``bytearray`` and ``memoryview`` arguments and results (the
      out-of-band path of pickle protocol 5) come back intact, with their type;
    - a ``cancellable=True`` call cancelled while a worker runs it ends at once (the
      function never returns), the worker is no longer ``alive``, the pool goes on
      with a new one, and once the pool has closed the process is gone (when the
      worker reports a :attr:`~procio_workers.abc.Worker.pid`);
    - a worker found dead before a call reached it (it died while idle) does not fail
      the call: it runs on another worker. Checked when the backend's workers are
      local processes (:attr:`~procio_workers.abc.Worker.pid` set) that this process
      can watch (its children, or any process on Linux);
    - :meth:`~procio_workers.WorkerPool.map` over the backend's batches
      (:meth:`~procio_workers.abc.WorkerBackend.prepare_batch` and
      :meth:`~procio_workers.abc.Worker.call_batch`) gives builtin ``map``'s results, in
      order or as completed, and ends with the first exception after every result
      before it, naming the item; :meth:`~procio_workers.WorkerPool.stream` gives a
      generator's items in order, unless the backend says it cannot stream
      (``TypeError``).

    The functions sent are importable from the standard library or from this module,
    and the values are ordinary Python objects: the backend's serializer must carry
    them (pickle does).

    Args:
        factory: builds a fresh, unopened backend.
        workers: how many concurrent calls to try.
    """
    await _check_calls(factory, workers)
    await _check_map(factory, workers)
    await _check_bad_input(factory)
    await _check_large_buffers(factory)
    await _check_cancellation(factory)
    await _check_retry_after_idle_death(factory)


async def check_frame_limits(factory: Callable[[], WorkerBackend], max_frame_length: int) -> None:
    """Check how a backend built with a frame limit keeps to it.

    A call whose message would be longer than *max_frame_length* bytes raises
    :exc:`~procio_workers.SerializationError` before any worker starts. A result, or
    an exception, too long for the limit reaches the caller as an error that is not
    :exc:`~procio_workers.BrokenWorkerProcess` (a result as ``SerializationError``),
    and the worker takes the next call.

    Args:
        factory: builds a fresh, unopened backend whose frame limit is
            *max_frame_length* (``lambda: ProcessBackend(max_frame_length=...)``).
        max_frame_length: the limit, in bytes.
    """
    over = max_frame_length + 1
    async with WorkerPool(max_workers=1, backend=(recorder := _Recorder(factory()))) as pool:
        refused = await _raised(pool.run_sync(len, b"\x01" * over), "a call over the frame limit")
        assert isinstance(refused, SerializationError), (
            f"a call of {over} bytes over a frame limit of {max_frame_length} raised "
            f"{refused!r}, not SerializationError"
        )
        assert pool.statistics().started == 0, "a call over the frame limit started a worker"
        first = await pool.run_sync(os.getpid)
        refused = await _raised(pool.run_sync(bytes, over), "a result over the frame limit")
        assert isinstance(refused, SerializationError), (
            f"a result of {over} bytes over a frame limit of {max_frame_length} raised "
            f"{refused!r}, not SerializationError"
        )
        await _check_same_worker(pool, recorder, first, "a result over the frame limit")
        error = await _raised(pool.run_sync(_raise_long_error, over), "a long exception")
        assert not isinstance(error, BrokenWorkerProcess), (
            f"an exception longer than the frame limit broke the worker: {error!r}"
        )
        await _check_same_worker(pool, recorder, first, "an exception over the frame limit")


class _Unserializable:
    """An argument no serializer can carry: pickle, cloudpickle and JSON all refuse it."""

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("this object refuses to be serialized")


def _raise_long_error(size: int) -> None:
    """Raise an exception whose message is *size* characters long (run in a worker)."""
    raise ValueError("x" * size)


class _Recorder(WorkerBackend):
    """A backend that hands out another backend's workers and remembers them."""

    def __init__(self, inner: WorkerBackend) -> None:
        self.inner = inner
        self.workers: list[Worker] = []
        #: Local processes that must be gone once the pool has closed its workers.
        self.must_be_gone: dict[int, str] = {}

    async def __aenter__(self) -> _Recorder:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        # The pool leaves its backend once every worker is closed: what is still
        # running now was left behind.
        left = [why for pid, why in self.must_be_gone.items() if _exists(pid)]
        await self.inner.__aexit__(*exc_info)
        if left and exc_info[0] is None:
            raise AssertionError(left[0])

    async def aclose(self) -> None:
        await self.inner.aclose()

    def prepare_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        return self.inner.prepare_call(func, args)

    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        worker = await self.inner.start_worker(options)
        self.workers.append(worker)
        return worker

    def local_pid(self, reported: int) -> int | None:
        """The pid of the worker that reported *reported* as its pid, if it is local."""
        for worker in self.workers:
            if worker.pid is not None and worker.pid == reported:
                return reported
        return None


async def _raised(
    call: Awaitable[object], what: str = "an exception in the function"
) -> BaseException:
    try:
        await call
    except Exception as exc:
        return exc
    raise AssertionError(f"{what} must reach the caller as an exception")


async def _check_same_worker(pool: WorkerPool, recorder: _Recorder, pid: int, what: str) -> None:
    figures = pool.statistics()
    assert figures.broken == 0, f"{what} broke the worker"
    assert figures.workers == 1, f"after {what}, the pool has {figures.workers} workers"
    assert figures.started == len(recorder.workers), "the pool miscounted its workers"
    if recorder.local_pid(pid) is not None:
        again = await pool.run_sync(os.getpid)
        assert again == pid, f"after {what}, worker {pid} was replaced by {again}"


async def _check_calls(factory: Callable[[], WorkerBackend], workers: int) -> None:
    async with WorkerPool(max_workers=workers, backend=factory()) as pool:
        assert await pool.run_sync(operator.add, 2, 3) == 5, "a call returns its result"
        error = await _raised(pool.run_sync(int, "not a number"))
        assert isinstance(error, ValueError), f"int('not a number') raised {error!r}"
        assert "not a number" in str(error), f"the exception lost its message: {error!r}"
        results: dict[int, object] = {}

        async def one(index: int) -> None:
            results[index] = await pool.run_sync(operator.mul, index, 10)

        async with anyio.create_task_group() as tg:
            for index in range(workers * 2):
                tg.start_soon(one, index)
        assert results == {i: i * 10 for i in range(workers * 2)}, f"got {results}"
        figures = pool.statistics()
        assert figures.calls == 2 + workers * 2, f"the pool counted {figures.calls} calls"
        assert figures.failures == 1, f"the pool counted {figures.failures} failures"
        assert 1 <= figures.started <= workers, f"{figures.started} workers started"
    after = pool.statistics()
    assert after.workers == 0, f"{after.workers} workers outlived the pool"


async def _check_map(factory: Callable[[], WorkerBackend], workers: int) -> None:
    async with WorkerPool(max_workers=workers, backend=factory()) as pool:
        numbers = list(range(-60, 60))
        for chunksize in (None, 1, 7):
            got = [value async for value in pool.map(abs, numbers, chunksize=chunksize)]
            assert got == list(map(abs, numbers)), f"map(abs) with chunksize={chunksize} gave {got}"
        unordered = [value async for value in pool.map(abs, numbers, ordered=False)]
        assert sorted(unordered) == sorted(map(abs, numbers)), "map(ordered=False) lost results"
        texts = ["1", "2", "3", "x", "5", "6"]
        results = pool.map(int, texts, chunksize=2)
        before: list[object] = []
        error = None
        try:
            async for value in results:
                before.append(value)
        except ValueError as exc:
            error = exc
        assert error is not None, f"map(int) over {texts} raised nothing"
        assert before == [1, 2, 3], f"map(int) yielded {before} before its error"
        assert results.failed_index == 3, f"map(int) blamed item {results.failed_index}"
        notes = getattr(error, "__notes__", [])
        assert any("item 3" in note for note in notes), f"the error's notes: {notes}"
        assert await pool.run_sync(operator.add, 2, 3) == 5, "the pool serves after a map"
        refusal = None
        try:
            items = [item async for item in pool.stream(iter, [1, 2, 3])]
        except TypeError as exc:
            refusal = str(exc)
        if refusal is not None:
            assert "stream" in refusal, f"a backend that cannot stream said: {refusal}"
        else:
            assert items == [1, 2, 3], f"stream(iter, [1, 2, 3]) gave {items}"


async def _check_bad_input(factory: Callable[[], WorkerBackend]) -> None:
    async with WorkerPool(max_workers=1, backend=(recorder := _Recorder(factory()))) as pool:
        error = await _raised(pool.run_sync(repr, _Unserializable()), "an unserializable argument")
        assert isinstance(error, SerializationError), (
            f"an argument that cannot be serialized raised {error!r}, not SerializationError"
        )
        figures = pool.statistics()
        assert figures.broken == 0, "an argument that cannot be serialized broke a worker"
        assert figures.started <= 1, f"{figures.started} workers started for one bad call"
        pid = await pool.run_sync(os.getpid)
        error = await _raised(pool.run_sync(threading.Lock), "an unserializable result")
        assert isinstance(error, SerializationError), (
            f"a result that cannot be serialized (a lock) raised {error!r}, not SerializationError"
        )
        await _check_same_worker(pool, recorder, pid, "a result that cannot be serialized")


def _large_buffers() -> list[bytes | bytearray | memoryview]:
    # Over the out-of-band threshold, of an odd length, not all one byte value.
    data = os.urandom(3 * _wire.OUT_OF_BAND_THRESHOLD + 7)
    words = memoryview(bytearray(data[: len(data) // 4 * 4])).cast("I")
    return [data, bytearray(data), memoryview(bytearray(data)), words]


async def _check_large_buffers(factory: Callable[[], WorkerBackend]) -> None:
    async with WorkerPool(max_workers=1, backend=factory()) as pool:
        for value in _large_buffers():
            kind = type(value).__name__
            original = memoryview(value)
            # value[:] is a value of the same kind: it goes out and comes back whole.
            back = await pool.run_sync(operator.getitem, value, slice(None))
            if isinstance(value, memoryview):
                # A memoryview may come back as any buffer holding the same bytes.
                assert isinstance(back, (memoryview, bytes, bytearray)), (
                    f"a large memoryview came back as {type(back)}"
                )
            else:
                assert type(back) is type(value), f"a large {kind} came back as {type(back)}"
            returned = memoryview(back).cast("B")
            assert returned.tobytes() == original.cast("B").tobytes(), (
                f"a large {kind} of {original.nbytes} bytes came back altered "
                f"({returned.nbytes} bytes)"
            )
            checksum = await pool.run_sync(zlib.crc32, value)
            assert checksum == zlib.crc32(value), f"a large {kind} argument arrived altered"


async def _check_cancellation(factory: Callable[[], WorkerBackend]) -> None:
    with tempfile.TemporaryDirectory() as folder:
        fifo = os.path.join(folder, "call-is-running")
        os.mkfifo(fifo)
        # Held open until the checks are done: the call cannot return before then.
        writer = -1
        try:
            async with WorkerPool(
                max_workers=1, backend=(recorder := _Recorder(factory()))
            ) as pool:
                outcome: list[object] = []
                with anyio.fail_after(60):
                    async with anyio.create_task_group() as tg:

                        async def blocked_call() -> None:
                            # Blocks in the worker until the FIFO has a writer and
                            # that writer closes it.
                            outcome.append(
                                await pool.run_sync(Path(fifo).read_bytes, cancellable=True)
                            )

                        tg.start_soon(blocked_call)
                        writer = await _open_when_read(fifo)
                        # The worker has opened the FIFO: it runs the call now.
                        tg.cancel_scope.cancel()
                assert not outcome, f"the cancelled call returned {outcome!r}"
                assert pool.statistics().busy == 0, "the cancelled call still holds a worker"
                assert recorder.workers, "the pool started no worker"
                killed = recorder.workers[0]
                assert not killed.alive, "the cancelled call's worker is still alive"
                pid = await pool.run_sync(os.getpid)
                assert killed.pid is None or pid != killed.pid, "the killed worker took a call"
                assert pool.statistics().started == 2, "no new worker replaced the killed one"
                if killed.pid is not None:
                    # Had it not been killed, the call would now return and the worker
                    # would wait for the next one: still there once the pool has closed.
                    recorder.must_be_gone[killed.pid] = (
                        f"worker {killed.pid}, whose call was cancelled, still exists once "
                        "the pool has closed its workers"
                    )
                # A backend that cannot stop a running call (threads, interpreters, a
                # cluster) may wait for it to return before it closes the worker.
                os.close(writer)
                writer = -1
        finally:
            if writer >= 0:
                os.close(writer)


async def _open_when_read(fifo: str) -> int:
    """Open *fifo* for writing once a reader has opened it, and return the descriptor."""
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO:  # ENXIO: no reader yet
                raise
        await anyio.sleep(0.01)


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _wait_dead_blocking(pid: int) -> bool:
    """Wait, without reaping it nor letting the event loop run, until *pid* has died.

    Returns ``False`` if this process cannot watch *pid* (not a child, no pidfd).
    """
    try:
        os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
    except ChildProcessError:
        pass
    else:
        return True
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return False
    try:
        watcher = pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        select.select([watcher], [], [], 30)
    finally:
        os.close(watcher)
    return True


async def _check_retry_after_idle_death(factory: Callable[[], WorkerBackend]) -> None:
    async with WorkerPool(max_workers=1, backend=(recorder := _Recorder(factory()))) as pool:
        pid = recorder.local_pid(await pool.run_sync(os.getpid))
        if pid is None or pid == os.getpid():
            return  # not a local worker process: nothing the kit may kill
        os.kill(pid, signal.SIGKILL)
        # Dead, but the pool has had no chance to notice: the next call finds out.
        if not _wait_dead_blocking(pid):
            return
        try:
            again = await pool.run_sync(os.getpid)
        except BrokenWorkerProcess as exc:
            raise AssertionError(
                "a call given a worker that had died while idle failed instead of "
                f"running on another worker (raise BrokenWorkerProcess with "
                f"started=False when the request never reached the worker): {exc}"
            ) from exc
        assert again != pid, f"the call ran on the dead worker {pid}"
        figures = pool.statistics()
        assert figures.failures == 0, f"the pool counted {figures.failures} failed calls"
        assert figures.calls == 2, f"the pool counted {figures.calls} calls, not 2"


async def check_launcher(launcher: Launcher, serializer: Serializer | None = None) -> None:
    """Check that workers started by *launcher* run calls and leave nothing behind.

    Args:
        launcher: the launcher to check.
        serializer: the serializer to use (default: pickle).
    """
    async with WorkerPool(max_workers=1, launcher=launcher, serializer=serializer) as pool:
        try:
            pid = await pool.run_sync(os.getpid)
        except BrokenWorkerProcess as exc:
            raise AssertionError(
                f"a worker started by the launcher could not take a call: {exc}"
            ) from exc
        assert isinstance(pid, int), "the worker returns its pid"
        assert pid != os.getpid(), "the call ran in another process"
        assert await pool.run_sync(os.getpid) == pid, "an idle worker is reused"
        error = await _raised(pool.run_sync(int, "x"))
        assert isinstance(error, ValueError), f"int('x') raised {error!r}"
        assert isinstance(error.__cause__, RemoteTraceback), "the traceback comes back"
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"worker {pid} still exists after the pool closed")


def python_worker_command(python: str | None = None) -> list[str]:
    """Return the command line of procio's own worker program (without descriptors)."""
    return [python or sys.executable, "-c", BOOTSTRAP, WORKER_PROGRAM]


class _Session:
    def __init__(self, command: Sequence[str], timeout: float) -> None:
        request_read, self.request = os.pipe()
        self.response, response_write = os.pipe()
        self.timeout = timeout
        self.protocol = 0
        self.reader = _wire.FrameReader()
        try:
            self.process = subprocess.Popen(
                [*command, str(request_read), str(response_write)],
                pass_fds=(request_read, response_write),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
        finally:
            os.close(request_read)
            os.close(response_write)

    def receive(self) -> _wire.Frame | None:
        deadline = time.monotonic() + self.timeout
        while not self.reader.frames:
            remaining = deadline - time.monotonic()
            ready, _, _ = select.select([self.response], [], [], max(remaining, 0))
            if not ready:
                raise AssertionError(f"no message from the worker within {self.timeout} s")
            count = os.readv(self.response, [self.reader.buffer()])
            if not count:
                self.reader.eof()
                return None
            self.reader.commit(count)
        return self.reader.frames.popleft()

    def expect(self, kind: int) -> _wire.Frame:
        frame = self.receive()
        assert frame is not None, f"the worker closed the protocol instead of sending {kind}"
        assert frame.kind == kind, (
            f"expected {_wire.KIND_NAMES[kind]}, got {_wire.KIND_NAMES[frame.kind]}"
        )
        return frame

    def send(self, kind: int, segments: Sequence[Any]) -> None:
        _wire.write_frame_blocking(self.request, kind, segments)

    def handshake(self, codec: str, max_frame_length: int | None = None) -> dict[str, Any]:
        hello = self._control(_wire.HELLO)
        offered = hello.get("protocols", [hello.get("protocol")])
        assert isinstance(offered, list), f"HELLO's protocols is not a list: {hello}"
        common = _wire.hello_versions(hello)
        assert common, f"HELLO offers no protocol version spoken here: {hello}"
        assert hello.get("protocol") == max(offered), f"HELLO's protocol is not its newest: {hello}"
        assert _wire.is_int(hello.get("pid")), "HELLO carries the worker's pid"
        assert isinstance(hello.get("codecs"), list), "HELLO lists the codecs"
        self.protocol = max(common)
        init: _wire.Init = {
            "protocol": self.protocol,
            "codec": codec,
            "sys_path": sys.path,
            "main": None,
        }
        if max_frame_length is not None:
            init["max_frame_length"] = max_frame_length
        self.send(_wire.INIT, [_wire.encode_control(init)])
        ready = self._control(_wire.READY)
        assert ready.get("ok") is True, f"READY says {ready}"
        return hello

    def _control(self, kind: int) -> dict[str, Any]:
        try:
            return _wire.decode_control(kind, self.expect(kind).segments)
        except _wire.ProtocolError as exc:
            raise AssertionError(str(exc)) from None

    def wait(self) -> int:
        try:
            return self.process.wait(self.timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the worker did not exit within {self.timeout} s") from None

    def close(self) -> None:
        for fd in (self.request, self.response):
            with suppress(OSError):
                os.close(fd)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        if self.process.stderr is not None:
            self.process.stderr.close()


@contextmanager
def _session(command: Sequence[str], timeout: float) -> Iterator[_Session]:
    session = _Session(command, timeout)
    try:
        yield session
    finally:
        session.close()


def _check_worker_command(command: Sequence[str], serializer: Serializer, timeout: float) -> None:
    codec = serializer.worker_codec
    with _session(command, timeout) as session:
        hello = session.handshake(codec)
        assert codec in hello["codecs"] or ":" in codec, f"the worker lacks codec {codec!r}"
        session.send(_wire.CALL, serializer.dump_call(operator.add, (2, 3)))
        reply = session.expect(_wire.RESULT)
        value = serializer.load_reply([memoryview(s) for s in reply.segments])
        assert value == 5, f"add(2, 3) came back as {value!r}"
        session.send(_wire.CALL, serializer.dump_call(int, ("x",)))
        error = session.expect(_wire.ERROR)
        meta = json.loads(bytes(error.segments[0]))
        assert meta.get("type", "").endswith("ValueError"), f"ERROR says {meta}"
        assert meta.get("stage") == "call", f"ERROR says {meta}"
        session.send(_wire.SHUTDOWN, [])
        assert session.receive() is None, "the worker sends nothing after SHUTDOWN"
        status = session.wait()
        assert status == 0, f"after SHUTDOWN the worker exited with {status}"
    with _session(command, timeout) as session:
        session.handshake(codec)
        _check_worker_survives_bad_calls(session, serializer)
    with _session(command, timeout) as session:
        hello = session.handshake(codec)
        if session.protocol >= 2:
            _check_worker_batches(session, serializer)
            _check_worker_streams(session, serializer)
            features = hello.get("features")
            if isinstance(features, list) and "pipeline" in features:
                _check_worker_pipeline(session, serializer)
            if isinstance(features, list) and "items" in features:
                _check_worker_items(session, serializer)
    with _session(command, timeout) as session:
        session.handshake(codec)
        os.close(session.request)
        status = session.wait()
        assert status == 0, f"at end of input the worker exited with {status}"
    with _session(command, timeout) as session:
        session.handshake(codec)
        os.write(session.request, b"\xee\x00\x00\x00")
        status = session.wait()
        assert status != 0, "a malformed frame must end the worker with a failure status"


def _reply(session: _Session, serializer: Serializer) -> object:
    frame = session.expect(_wire.RESULT)
    return serializer.load_reply([memoryview(s) for s in frame.segments])


def _expect_error(session: _Session, stage: str, what: str) -> dict[str, Any]:
    frame = session.receive()
    assert frame is not None, f"the worker closed the protocol after {what}"
    kind = _wire.KIND_NAMES.get(frame.kind, frame.kind)
    assert frame.kind == _wire.ERROR, f"{what} was answered with {kind}, not ERROR"
    meta = json.loads(bytes(frame.segments[0]))
    assert isinstance(meta, dict), f"the ERROR for {what} is not a JSON object"
    assert meta.get("stage") == stage, f"the ERROR for {what} has stage {meta.get('stage')!r}"
    for key in ("type", "message", "traceback"):
        assert isinstance(meta.get(key), str), f"the ERROR for {what} has no {key}"
    return meta


def _still_serves(session: _Session, serializer: Serializer, what: str) -> None:
    session.send(_wire.CALL, serializer.dump_call(operator.add, (2, 3)))
    frame = session.receive()
    assert frame is not None, f"the worker closed the protocol after {what}"
    assert frame.kind == _wire.RESULT, f"after {what}, the worker stopped serving calls"
    value = serializer.load_reply([memoryview(s) for s in frame.segments])
    assert value == 5, f"after {what}, add(2, 3) came back as {value!r}"


def _check_worker_survives_bad_calls(session: _Session, serializer: Serializer) -> None:
    what = "a CALL the codec cannot decode"
    session.send(_wire.CALL, [b"\xff\x00 neither pickle nor JSON"])
    _expect_error(session, "arguments", what)
    _still_serves(session, serializer, what)
    what = "a result the codec cannot encode (a lock)"
    session.send(_wire.CALL, serializer.dump_call(threading.Lock, ()))
    _expect_error(session, "result", what)
    _still_serves(session, serializer, what)
    if serializer.worker_codec not in ("pickle", "cloudpickle"):
        return  # large buffers: only the built-in codecs are known to carry them
    for value in _large_buffers():
        kind = type(value).__name__
        session.send(_wire.CALL, serializer.dump_call(operator.getitem, (value, slice(None))))
        back = _reply(session, serializer)
        assert type(back) is type(value), f"a large {kind} came back as {type(back)}"
        original, returned = memoryview(value), memoryview(back)
        assert returned.format == original.format, f"a large {kind} changed format"
        assert returned.tobytes() == original.tobytes(), f"a large {kind} came back altered"


def _collect(session: _Session, serializer: Serializer, what: str) -> tuple[list[Any], Any]:
    """Read ITEMS up to END or ERROR: (the items, the ERROR's JSON object or None)."""
    items: list[Any] = []
    while True:
        frame = session.receive()
        assert frame is not None, f"the worker closed the protocol during {what}"
        if frame.kind == _wire.ITEMS:
            group = serializer.load_reply([memoryview(s) for s in frame.segments])
            assert isinstance(group, list), f"ITEMS of {what} carry {type(group).__name__}"
            assert group, f"an ITEMS frame of {what} carries no item"
            items += group
        elif frame.kind == _wire.END:
            assert not frame.segments, f"the END of {what} has segments"
            return items, None
        elif frame.kind == _wire.ERROR:
            return items, json.loads(bytes(frame.segments[0]))
        else:
            kind = _wire.KIND_NAMES.get(frame.kind, frame.kind)
            raise AssertionError(f"{what} was answered with {kind}")


def _check_worker_batches(session: _Session, serializer: Serializer) -> None:
    what = "a BATCH of add((1, 2), (3, 4), (5, 6))"
    session.send(_wire.BATCH, serializer.dump_batch(operator.add, [(1, 2), (3, 4), (5, 6)]))
    items, error = _collect(session, serializer, what)
    assert error is None, f"{what} was answered with an ERROR: {error}"
    assert items == [3, 7, 11], f"{what} gave {items!r}"
    what = "a BATCH of int('1'), int('x'), int('3')"
    session.send(_wire.BATCH, serializer.dump_batch(int, [("1",), ("x",), ("3",)]))
    items, error = _collect(session, serializer, what)
    assert items == [1], f"{what} sent {items!r} before its error, not [1]"
    assert error is not None, f"{what} ended without an ERROR"
    assert error.get("stage") == "call", f"the ERROR of {what} says {error}"
    assert error.get("index") == 1, f"the ERROR of {what} names item {error.get('index')!r}"
    assert str(error.get("type", "")).endswith("ValueError"), f"the ERROR says {error}"
    _still_serves(session, serializer, what)
    if serializer.worker_codec not in ("pickle", "cloudpickle"):
        return  # the calls below send classes as arguments: only pickle is known to
    what = "a BATCH whose second result cannot be encoded (a Condition holds a lock)"
    calls = [(int, "1"), (threading.Condition,), (int, "3")]
    session.send(_wire.BATCH, serializer.dump_batch(type.__call__, calls))
    items, error = _collect(session, serializer, what)
    assert items == [1], f"{what} sent {items!r} before its error, not [1]"
    assert error is not None, f"{what} ended without an ERROR"
    assert error.get("stage") == "result", f"{what}: {error}"
    assert error.get("index") == 1, f"the ERROR of {what} names item {error.get('index')!r}"
    _still_serves(session, serializer, what)


def _check_worker_items(session: _Session, serializer: Serializer) -> None:
    # A BATCH of items is the triple (function, items, 1): only a serializer that can
    # write one (the built-in ones) is used for it.
    dump_items: Callable[..., Sequence[Buffer] | None] | None
    dump_items = getattr(serializer, "_dump_items", None)
    if dump_items is None:
        return
    batch = dump_items(len, [(1, 2), "abc", []])
    if batch is None:
        return
    what = "a BATCH of the items (1, 2), 'abc', [] for len"
    session.send(_wire.BATCH, batch)
    items, error = _collect(session, serializer, what)
    assert error is None, f"{what} was answered with an ERROR (each item is ONE argument): {error}"
    assert items == [2, 3, 0], f"{what} gave {items!r}"
    what = "a BATCH of the items '1', 'x', '3' for int"
    batch = dump_items(int, ["1", "x", "3"])
    assert batch is not None
    session.send(_wire.BATCH, batch)
    items, error = _collect(session, serializer, what)
    assert items == [1], f"{what} sent {items!r} before its error, not [1]"
    assert error is not None, f"{what} ended without an ERROR"
    assert error.get("stage") == "call", f"the ERROR of {what} says {error}"
    assert error.get("index") == 1, f"the ERROR of {what} names item {error.get('index')!r}"
    _still_serves(session, serializer, what)
    if serializer.worker_codec not in ("pickle", "cloudpickle"):
        return
    what = "a BATCH of the triple (function, items, 2), which no version defines"
    session.send(_wire.BATCH, _wire.PickleCodec().dumps((len, [(1, 2)], 2), 2))
    _expect_error(session, "arguments", what)
    _still_serves(session, serializer, what)


def _check_worker_pipeline(session: _Session, serializer: Serializer) -> None:
    what = "two BATCHes sent back to back"
    session.send(_wire.BATCH, serializer.dump_batch(operator.add, [(1, 2)]))
    session.send(_wire.BATCH, serializer.dump_batch(operator.add, [(3, 4), (5, 6)]))
    for expected in ([3], [7, 11]):
        items, error = _collect(session, serializer, what)
        assert error is None, f"{what}: one was answered with an ERROR: {error}"
        assert items == expected, f"{what} were answered out of step: {items!r}"
    _still_serves(session, serializer, what)
    if serializer.worker_codec not in ("pickle", "cloudpickle"):
        return  # the calls below need time.sleep by reference: only pickle is known to
    what = "a BATCH queued behind a 0.3 s one, then CLOSE"
    session.send(_wire.BATCH, serializer.dump_batch(time.sleep, [(0.3,)]))
    session.send(_wire.BATCH, serializer.dump_batch(operator.add, [(1, 2)]))
    session.send(_wire.CLOSE, [])
    items, error = _collect(session, serializer, what)
    assert error is None, f"{what}: the first was answered with an ERROR: {error}"
    assert items == [None], f"{what}: the first gave {items!r}"
    items, error = _collect(session, serializer, what)
    assert error is None, f"{what}: the dropped one was answered with an ERROR: {error}"
    assert items == [], f"{what}: the queued one ran and gave {items!r}"
    _still_serves(session, serializer, what)


def _nothing_within(session: _Session, seconds: float) -> bool:
    """Whether the worker sends nothing for *seconds*."""
    if session.reader.frames:
        return False
    ready, _, _ = select.select([session.response], [], [], seconds)
    return not ready


def _check_worker_streams(session: _Session, serializer: Serializer) -> None:
    what = "a STREAM of iter([1, 2, 3]) with credit for 8 frames"
    session.send(_wire.STREAM, serializer.dump_call(iter, ([1, 2, 3],)))
    for _ in range(8):
        session.send(_wire.MORE, [])
    items, error = _collect(session, serializer, what)
    assert error is None, f"{what} was answered with an ERROR: {error}"
    assert items == [1, 2, 3], f"{what} gave {items!r}"
    what = "a STREAM of an endless itertools.count() with credit for one frame"
    session.send(_wire.STREAM, serializer.dump_call(itertools.count, ()))
    session.send(_wire.MORE, [])
    first = session.expect(_wire.ITEMS)
    group = serializer.load_reply([memoryview(s) for s in first.segments])
    assert isinstance(group, list), f"{what} sent {group!r}"
    assert group[:1] == [0], f"{what} began with {group!r}"
    assert _nothing_within(session, 0.2), f"{what} sent more than its credit allows"
    session.send(_wire.CLOSE, [])
    _, error = _collect(session, serializer, f"{what}, then CLOSE")
    assert error is None, f"CLOSE was answered with an ERROR: {error}"
    _still_serves(session, serializer, f"{what}, then CLOSE")
    what = "a STREAM of a function that returns no iterator (add(2, 3))"
    session.send(_wire.STREAM, serializer.dump_call(operator.add, (2, 3)))
    session.send(_wire.MORE, [])
    items, error = _collect(session, serializer, what)
    assert not items, f"{what} gave {items!r}"
    assert error is not None, f"{what} ended without an ERROR"
    assert str(error.get("type", "")).endswith("TypeError"), f"the ERROR says {error}"
    _still_serves(session, serializer, what)
    if serializer.worker_codec not in ("pickle", "cloudpickle"):
        return  # the call below sends a function as an argument: only pickle is known to
    what = "a STREAM of map(int, ['1', 'x']), whose second item raises"
    session.send(_wire.STREAM, serializer.dump_call(map, (int, ["1", "x"])))
    for _ in range(4):
        session.send(_wire.MORE, [])
    items, error = _collect(session, serializer, what)
    assert items == [1], f"{what} sent {items!r} before its error, not [1]"
    assert error is not None, f"{what} ended without an ERROR"
    assert error.get("stage") == "call", f"{what}: {error}"
    assert str(error.get("type", "")).endswith("ValueError"), f"the ERROR says {error}"
    # Credit left over from the stream that ended is ignored.
    _still_serves(session, serializer, what)


def _check_worker_frame_limit(
    command: Sequence[str], serializer: Serializer, timeout: float, limit: int
) -> None:
    with _session(command, timeout) as session:
        session.handshake(serializer.worker_codec, limit)
        what = f"a result over the frame limit of {limit} bytes"
        session.send(_wire.CALL, serializer.dump_call(operator.mul, ("x", limit + 1)))
        _expect_error(session, "result", what)
        _still_serves(session, serializer, what)
        what = f"an exception over the frame limit of {limit} bytes"
        # A KeyError carries its key, and its message and traceback show it whole.
        session.send(_wire.CALL, serializer.dump_call(operator.getitem, ({}, "x" * (limit // 2))))
        frame = session.receive()
        assert frame is not None, f"the worker closed the protocol after {what}"
        kind = _wire.KIND_NAMES.get(frame.kind, frame.kind)
        assert frame.kind == _wire.ERROR, f"{what} was answered with {kind}, not ERROR"
        size = sum(len(segment) for segment in frame.segments)
        assert size <= limit, f"{what} was answered with a frame of {size} bytes"
        _still_serves(session, serializer, what)


async def check_worker_command(
    command: Sequence[str],
    serializer: Serializer | None = None,
    *,
    timeout: float = 30.0,
    max_frame_length: int | None = None,
) -> None:
    """Drive a worker program over the protocol and check how it behaves.

    The program is started as ``command + [request fd, response fd]``. It must
    complete the handshake; run calls (``operator.add`` and a failing ``int``) through
    the codec of *serializer*; answer a CALL it cannot decode with an ``ERROR`` of
    stage ``"arguments"`` and a result it cannot encode with one of stage
    ``"result"``, and serve the next call after either; with the built-in codecs,
    send large ``bytes``, ``bytearray`` and ``memoryview`` values back intact; exit
    with status 0 on SHUTDOWN and at end of input, and with another status on a
    malformed frame. A worker that offers protocol version 2 must also answer a
    ``BATCH`` with its results in order (and with the index of an item that raised or
    whose result cannot be encoded), and run a ``STREAM`` within the credit it was given,
    stop it on ``CLOSE``, and report a generator's error after the items before it.
    One that lists the feature ``"pipeline"`` must answer two ``BATCH``es sent back to
    back in order, and answer a ``BATCH`` queued behind a running one and followed by
    ``CLOSE`` with ``END`` alone. One that lists the feature ``"items"`` must call the
    function of a ``BATCH`` of items (the triple ``(function, items, 1)``, written by
    the built-in serializers) with each item as its one argument, report the index of
    an item that raised, and refuse a triple with another argument count.

    Args:
        command: the worker's command line, without the two descriptor numbers.
        serializer: the serializer whose codec to use (default: pickle).
        timeout: seconds allowed for each reply and for each exit.
        max_frame_length: also check, with this limit in ``INIT``, that a result or
            an exception too long for it is answered with an ``ERROR`` within the
            limit, after which the worker serves the next call.
    """
    serializer = serializer or PickleSerializer()
    await anyio.to_thread.run_sync(_check_worker_command, list(command), serializer, timeout)
    if max_frame_length is not None:
        await anyio.to_thread.run_sync(
            _check_worker_frame_limit, list(command), serializer, timeout, max_frame_length
        )
