"""The worker program: runs calls that arrive over the protocol pipes.

It is started by file path through a short ``-c`` bootstrap (see ``_process_backend``),
never imported as part of the ``procio_workers`` package, and imports nothing but the
standard library and the wire module next to it, so a cold start costs little more than
starting the interpreter. Usage: ``<bootstrap> <this file> <request fd> <response fd>``.
"""

from __future__ import annotations

import _thread
import importlib.machinery
import os
import select
import signal
import sys
import time
import types
from itertools import islice, starmap

# typing.TYPE_CHECKING without importing typing, which would cost every worker's start
# some milliseconds for names used in annotations only (type checkers treat a module
# constant of this name as true).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, Protocol

    from typing_extensions import Buffer

    # Seen by the type checker as the package's wire module, which is the very file
    # loaded below; at run time the package is never imported here.
    from . import _wire as wire
    from ._wire import ErrorHeader, Frame, FrameReader, Hello, Init, MainSpec, Ready, Stage

    class Codec(Protocol):
        """What the worker needs of a codec: a built-in one, or a factory's product."""

        def loads(self, segments: Sequence[bytes | bytearray | memoryview]) -> Any:
            """Rebuild a value (a call, a batch) from its segments."""

        def dumps(self, value: object) -> Sequence[Buffer]:
            """Turn a value (a result, a list of items, an exception) into segments."""


_WIRE_NAME = "_procio_wire"


def _load_wire() -> types.ModuleType:
    existing = sys.modules.get(_WIRE_NAME)
    if existing is not None:
        return existing
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_wire.py")
    # Loaded as the bootstrap loads this program: a source file loader, which keeps the
    # compiled code cached, without importlib.util (and contextlib, which it imports).
    module = types.ModuleType(_WIRE_NAME)
    module.__file__ = path
    sys.modules[_WIRE_NAME] = module
    importlib.machinery.SourceFileLoader(_WIRE_NAME, path).exec_module(module)
    return module


def _find_spec(name: str) -> importlib.machinery.ModuleSpec | None:
    """Find the module *name* as ``importlib.util.find_spec`` does."""
    if "." in name:
        # A submodule (a main module run with -m): its package's path is needed; rare
        # enough to pay for importlib.util.
        import importlib.util

        return importlib.util.find_spec(name)
    module = sys.modules.get(name)
    if module is not None:
        return getattr(module, "__spec__", None)
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = find(name, None) if find is not None else None
        if spec is not None:
            return spec  # type: ignore[no-any-return]
    return None


if not TYPE_CHECKING:
    wire = _load_wire()

#: The descriptors of the protocol pipes, for code that must reach them (tests).
REQUEST_FD = -1
RESPONSE_FD = -1

#: True while the parent's main module runs in this worker. A main module that starts
#: workers when imported (no ``if __name__ == "__main__":`` guard) would otherwise have
#: each worker start another, without end; procio_workers refuses to start one then.
RUNNING_PARENT_MAIN = False

#: This worker's idle polling as INIT set it: (seconds polled after an answer, adaptive).
IDLE_POLL: tuple[float, bool] = (0.0, False)

#: The codecs built into this program; HELLO lists those that can be loaded here.
CODECS = ["pickle", "cloudpickle"]
FEATURES = [
    "out-of-band",
    "lazy-main",
    "main-ahead",
    "traceback",
    "batch",
    "stream",
    "pipeline",
    "items",
]

#: The protocol version INIT chose (1: single calls only; 2: batches and streams too).
PROTOCOL = 0

#: A stream's items wait in the worker, while the parent has given no credit for more,
#: up to this many (or about STREAM_HOLD_BYTES, judged by the size of the items sent so
#: far): the generator is not advanced beyond that until the parent reads on.
STREAM_HOLD_ITEMS = 256
STREAM_HOLD_BYTES = 1 << 20
#: A stream looks for the parent's control messages (more credit, or a request to stop)
#: at least this often, between two items of the generator.
STREAM_CHECK_SECONDS = 1e-3
#: A stream's items wait to go out together at most this long after the first of them
#: was produced (checked between items); an item that took this long goes out at once.
STREAM_LINGER_SECONDS = 1e-3
#: Whether ``list.extend`` keeps the items it appended before its iterator raised:
#: CPython's does, so a BATCH runs its calls in C (``map``) and still knows how many
#: returned before the one that raised. Elsewhere, one call at a time.
_EXTEND_KEEPS_PARTIAL = sys.implementation.name == "cpython"


class _ParentMain(types.ModuleType):
    """The parent's ``__main__``, executed as ``__mp_main__`` on first use only.

    Most calls never touch the parent's main module, so running it (and whatever it
    imports) is put off until an unpickled reference asks for one of its names. A
    worker started ahead of need (INIT's ``main_ahead``) runs it at once instead, with
    :meth:`_procio_run_ahead`, while nothing waits for it.
    """

    def __init__(self, spec: MainSpec) -> None:
        super().__init__("__mp_main__")
        self.__dict__["_procio_spec"] = spec
        self.__dict__["_procio_loaded"] = False
        # What running it ahead raised, kept for the first use, which raises it then.
        self.__dict__["_procio_error"] = None

    def __getattr__(self, name: str) -> Any:
        namespace = self.__dict__
        if name.startswith("__"):
            raise AttributeError(name)
        if namespace["_procio_loaded"]:
            error = namespace["_procio_error"]
            if error is None:
                raise AttributeError(name)
            namespace["_procio_error"] = None
            try:
                raise error
            finally:
                del error
        namespace["_procio_loaded"] = True
        self._procio_run()
        try:
            return namespace[name]
        except KeyError:
            raise AttributeError(f"the parent's main module has no attribute {name!r}") from None

    def _procio_run_ahead(self) -> None:
        """Run the module now, keeping what it raises for the first use of it."""
        namespace = self.__dict__
        if namespace["_procio_loaded"]:
            return
        namespace["_procio_loaded"] = True
        try:
            self._procio_run()
        except BaseException as exc:
            # A SystemExit or a KeyboardInterrupt of the module's own is kept too: run
            # when first needed, it would have failed that call, not ended the worker.
            namespace["_procio_error"] = exc
        finally:
            _flush_std()

    def _procio_run(self) -> None:
        spec: MainSpec = self.__dict__["_procio_spec"]
        namespace = self.__dict__
        namespace["__builtins__"] = __builtins__
        if spec.get("module"):
            name = spec["module"]
            found = _find_spec(name)
            if found is None or found.loader is None:
                raise ImportError(f"cannot find the parent's main module {name!r}")
            namespace["__spec__"] = found
            namespace["__file__"] = found.origin
            namespace["__package__"] = found.parent
            code = found.loader.get_code(found.name)  # type: ignore[attr-defined]
        else:
            path = spec["path"]
            namespace["__file__"] = path
            namespace["__package__"] = None
            namespace["__spec__"] = None
            with open(path, "rb") as source:
                code = compile(source.read(), path, "exec")
        global RUNNING_PARENT_MAIN
        RUNNING_PARENT_MAIN = True
        try:
            exec(code, namespace)
        finally:
            RUNNING_PARENT_MAIN = False


def _install_main(spec: MainSpec | None) -> types.ModuleType:
    if isinstance(spec, dict) and (spec.get("module") or spec.get("path")):
        main: types.ModuleType = _ParentMain(spec)
    else:
        main = types.ModuleType("__mp_main__")
    sys.modules["__main__"] = sys.modules["__mp_main__"] = main
    return main


def _available_codecs() -> list[str]:
    """Return the built-in codecs this worker can load: cloudpickle only if installed."""
    available = ["pickle"]
    try:
        if _find_spec("cloudpickle") is not None:
            available.append("cloudpickle")
    except (ImportError, ValueError):
        pass  # a broken or stubbed-out cloudpickle: not offered
    return available


def _describe(exc: BaseException, stage: Stage) -> ErrorHeader:
    """Return the header of an ERROR reporting *exc*, raised at *stage*."""
    import traceback

    kind = type(exc)
    # The frames of this program (the serving loop that called the function) say
    # nothing about the user's code: the text starts at the first frame outside it.
    frames = exc.__traceback__
    while frames is not None and frames.tb_frame.f_code.co_filename == __file__:
        frames = frames.tb_next
    return {
        "stage": stage,
        "type": f"{kind.__module__}.{kind.__qualname__}",
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(kind, exc, frames)),
    }


def _flush_std() -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass


#: Room kept for the JSON header of an ERROR whose exception object is sent too.
_HEADER_ROOM = 400


def _shorten(text: str, keep: int) -> str:
    """Cut the middle out of *text* so that about *keep* characters of it remain."""
    if len(text) <= keep:
        return text
    if keep < 100:
        return text[: max(keep, 0)]
    head = keep // 4
    tail = keep - head - 60
    cut = len(text) - head - tail
    return f"{text[:head]}\n[... {cut} characters cut: over the frame limit ...]\n{text[-tail:]}"


def _error_header(meta: ErrorHeader, budget: int) -> bytes:
    """Encode *meta*, shortening its texts until it takes at most *budget* bytes."""
    header = wire.encode_control(meta)
    for _ in range(8):
        if len(header) <= budget:
            return header
        # Escapes make the encoded size of a text differ from its length: shrink every
        # text by the share that must go, and look again.
        ratio = budget / len(header) * 0.8
        meta = meta.copy()
        if "message" in meta:
            meta["message"] = _shorten(meta["message"], int(len(meta["message"]) * ratio))
        if "traceback" in meta:
            meta["traceback"] = _shorten(meta["traceback"], int(len(meta["traceback"]) * ratio))
        if "unserializable" in meta:
            why = meta["unserializable"]
            meta["unserializable"] = _shorten(why, int(len(why) * ratio))
        header = wire.encode_control(meta)
    brief: ErrorHeader = {"stage": meta["stage"], "type": meta["type"][:100]}
    if "index" in meta:
        brief["index"] = meta["index"]
    return wire.encode_control(brief)


def _send_error(
    link: _Link,
    codec: Codec,
    exc: BaseException,
    stage: Stage,
    limit: int,
    index: int | None = None,
) -> None:
    meta = _describe(exc, stage)
    if index is not None:
        meta["index"] = index
    segments: Sequence[Buffer]
    try:
        segments = codec.dumps(exc)
    except BaseException as problem:
        meta["unserializable"] = f"{type(problem).__name__}: {problem}"
        segments = []
    size = sum(memoryview(segment).nbytes for segment in segments)
    if size + _HEADER_ROOM > limit:
        # The parent refuses a frame over its limit and gives up on this worker: send
        # the exception's type and a shortened description instead of the object.
        meta["unserializable"] = (
            f"the exception takes {size} bytes, over the frame limit (max_frame_length={limit})"
        )
        segments, size = [], 0
    header = _error_header(meta, limit - size)
    link.send(wire.ERROR, [header, *segments])


#: After answering, how long a worker keeps polling for its next call before it sleeps:
#: a caller making calls one after another then finds it awake (waking a sleeping process
#: on another CPU costs tens of microseconds on a virtual machine). INIT's ``idle_poll``
#: sets it for a worker.
SPIN_SECONDS = 200e-6
#: Whether, by default, a worker polls only while calls come back to back: it polls
#: after an answer only if the call it answered came within the polling window.
ADAPTIVE = True

#: How often a worker that cannot watch its parent through a pidfd (not Linux, or a
#: sandbox that refuses pidfd_open) checks, while it waits, whether its parent still runs.
PARENT_CHECK_SECONDS = 0.25

_sched_yield = getattr(os, "sched_yield", None)

#: The size of the buffer a request is first read into (see ``_Link.receive``).
_INBOX_SIZE = 64 * 1024


class ParentGone(Exception):  # noqa: N818 - an event, not an error
    """The process that started this worker has exited: nobody is left to serve."""


class _Link:
    """The worker's ends of the protocol pipes; every wait on them watches the parent.

    The parent's death normally shows as end of file on the request pipe. But a fork of
    the parent (a ``fork`` multiprocessing child, say) holds the parent's ends of the
    pipes as well, and then no end of file comes while the fork lives. So a worker
    waiting for a call, or for room in a full response pipe, also waits for its parent's
    exit: on a pidfd of the parent where Linux offers one, else by checking its parent
    pid now and then. It does not depend on which thread of the parent started it, as
    ``PR_SET_PDEATHSIG`` would (Trio, for one, starts processes from a worker thread).

    With a pidfd, a worker that sleeps until its next call does so in a plain blocking
    read of the request pipe, the cheapest way for a process to sleep on a pipe and be
    woken (a ``poll`` of the pipe and the pidfd, then a read, costs a call arriving at
    a sleeping worker about a tenth more of the worker's CPU). The parent is then
    watched by a thread of its own, asleep on the pidfd, which on the parent's exit
    interrupts a read that waits for a call (see ``_watch_parent``); a running function
    is never interrupted, and the worker ends when it next waits, as before.
    """

    def __init__(self) -> None:
        self.parent = os.getppid()
        self.pidfd = -1
        pidfd_open = getattr(os, "pidfd_open", None)
        if pidfd_open is not None:
            try:  # noqa: SIM105 - contextlib is not worth importing at start-up for this
                self.pidfd = pidfd_open(self.parent)  # close-on-exec, as every pidfd
            except OSError:
                pass  # an old kernel or a sandbox: check the parent pid instead
        self.timeout: int | None = None if self.pidfd >= 0 else int(PARENT_CHECK_SECONDS * 1e3)
        self.incoming = select.poll()
        self.incoming.register(REQUEST_FD, select.POLLIN)
        self.outgoing = select.poll()
        self.outgoing.register(RESPONSE_FD, select.POLLOUT)
        if self.pidfd >= 0:
            self.incoming.register(self.pidfd, select.POLLIN)
            self.outgoing.register(self.pidfd, select.POLLIN)
        os.set_blocking(REQUEST_FD, False)
        os.set_blocking(RESPONSE_FD, False)
        # Whether the request pipe is in blocking mode now: a worker that sleeps in a
        # blocking read leaves it so while calls come apart (see ``receive``).
        self.blocking = False
        # Set by the watching thread once the parent has exited, and by the serving
        # thread while it sleeps in a blocking read for a call (see ``_watch_parent``).
        self.parent_gone = False
        self.idle = False
        self.watched = False
        if self.pidfd >= 0:
            try:
                _thread.start_new_thread(_watch_parent, (self, _thread.get_ident()))
            except RuntimeError:
                pass  # no thread to be had: poll the pidfd with the pipe, as without it
            else:
                self.watched = True
        # Idle polling: how long to poll for the next call after an answer, and whether
        # to do so only when calls come back to back: the last two each came within that
        # time of the answer before. One quick call after a pause (a caller woken late,
        # catching up) is no run of calls, and polling after it would burn the CPU until
        # the next pause ends.
        self.spin = SPIN_SECONDS
        self.adaptive = ADAPTIVE
        self.back_to_back = True
        self.quick = True  # whether the last call came within self.spin of the answer
        self.answered = 0.0  # time.perf_counter() when the last answer went out
        # A request is read here first while the frame reader holds no part of a frame:
        # a whole CALL of one segment, the usual request, is then taken from it directly.
        self.inbox = bytearray(_INBOX_SIZE)
        self.inbox_view = memoryview(self.inbox)
        # The parent may have died before its pidfd was opened (one of a recycled pid
        # would then watch a stranger): its pid is no longer our parent's.
        self._check_parent()

    def _check_parent(self) -> None:
        if os.getppid() != self.parent:
            raise ParentGone

    def _wait(self, poller: select.poll) -> None:
        while True:
            ready = poller.poll(self.timeout)
            pidfd = self.pidfd
            if pidfd < 0:
                self._check_parent()
            else:
                for fd, _ in ready:
                    if fd == pidfd:
                        raise ParentGone
            if ready:
                return

    def send(self, kind: int, segments: Sequence[Buffer]) -> None:
        """Write one whole frame."""
        self.send_buffers(wire.encode_frame(kind, segments))

    def send_buffers(self, buffers: list[Buffer]) -> None:
        """Write encoded frames whole."""
        whole = buffers[0]
        if len(buffers) == 1 and type(whole) is bytes:
            # The usual small reply, in one write (a pipe with room takes it whole).
            try:
                written = os.write(RESPONSE_FD, whole)
            except BlockingIOError:
                written = 0
            if written == len(whole):
                self.answered = time.perf_counter()
                return
            buffers = [memoryview(whole)[written:]]
        while buffers:
            try:
                written = os.writev(RESPONSE_FD, buffers)
            except BlockingIOError:
                self._wait(self.outgoing)
                continue
            buffers = wire.skip_written(buffers, written)
        self.answered = time.perf_counter()

    def receive(self, reader: FrameReader) -> Frame | None:
        """Return the next frame (``None`` at EOF), polling briefly before sleeping on it."""
        if reader.frames:
            self.back_to_back = self.quick = True
            return reader.frames.popleft()
        deadline = 0.0
        spin = self.spin > 0 and _sched_yield is not None
        if self.adaptive and not self.back_to_back:
            spin = False  # calls come apart: sleep at once, polling would burn CPU
        # Whether part of a frame is in the reader: read once, and again only once the
        # reader has taken more bytes (a property costs a call each time).
        whole = not reader.mid_frame
        # With a thread watching the parent, a wait at a frame's start is a blocking read.
        sleep = self.watched and whole
        if not spin and whole and not sleep:
            # No polling: the next call is most likely not there yet, and trying to read
            # it first would cost one more system call for nothing.
            self._wait(self.incoming)
        while True:
            if sleep and whole and not spin:
                count = self._sleep_read()
            else:
                if self.blocking:  # tested here first: this loop spins, a call costs
                    self.nonblocking()
                try:
                    count = os.readv(REQUEST_FD, [self.inbox_view if whole else reader.buffer()])
                except BlockingIOError:
                    if not spin:
                        self._wait(self.incoming)
                        continue
                    now = time.perf_counter()
                    if not deadline:
                        deadline = now + self.spin
                    elif now < deadline:
                        _sched_yield()  # type: ignore[misc]  # let the caller, perhaps, run
                    elif sleep:
                        spin = False  # polled long enough: sleep in a read
                    else:
                        self._wait(self.incoming)
                        deadline = 0.0
                    continue
            if not count:
                reader.eof()
                return None
            if whole:
                inbox = self.inbox
                if count >= wire.ONE_SEGMENT.size:
                    kind, flags, segments, length = wire.ONE_SEGMENT.unpack_from(inbox)
                    if (
                        kind == wire.CALL
                        and segments == 1
                        and not flags
                        and length == count - wire.ONE_SEGMENT.size
                        and length <= reader.max_frame_length
                    ):
                        quick = time.perf_counter() - self.answered < self.spin
                        self.back_to_back = quick and self.quick
                        self.quick = quick
                        return wire.Frame(kind, [inbox[wire.ONE_SEGMENT.size : count]])
                reader.feed(self.inbox_view[:count])
            else:
                reader.commit(count)
            if reader.frames:
                quick = time.perf_counter() - self.answered < self.spin
                self.back_to_back = quick and self.quick
                self.quick = quick
                return reader.frames.popleft()
            whole = not reader.mid_frame

    def _sleep_read(self) -> int:
        """Sleep in a blocking read of the next request into the inbox; return its size.

        Only with a thread watching the parent, and only at a frame's start. Raises
        :class:`ParentGone` once that thread has found the parent gone.
        """
        if not self.blocking:
            os.set_blocking(REQUEST_FD, True)
            self.blocking = True
        # Idle first, then the look at the parent: the watching thread notes the
        # parent's exit first, then looks whether this thread is idle. One of the two
        # sees the other's mark, so no exit goes unseen while this thread sleeps.
        self.idle = True
        if self.parent_gone:
            self.idle = False
            raise ParentGone
        try:
            return os.readv(REQUEST_FD, [self.inbox_view])
        finally:
            self.idle = False

    def nonblocking(self) -> None:
        """Put the request pipe back in non-blocking mode, for reads that must not wait."""
        if self.blocking:
            os.set_blocking(REQUEST_FD, False)
            self.blocking = False

    def close_follows(self, reader: FrameReader) -> bool:
        """Whether a CLOSE came right behind the BATCH just taken (then taken as well).

        The parent queues a BATCH behind the running one, and sends CLOSE when it no
        longer wants it: a BATCH not begun yet is then dropped. Looks at what has
        arrived, without waiting.
        """
        if not reader.frames:
            self.nonblocking()
            try:
                count = os.readv(REQUEST_FD, [reader.buffer()])
            except BlockingIOError:
                return False
            if not count:
                return False  # end of input: the serving loop sees it next
            reader.commit(count)
        if reader.frames and reader.frames[0].kind == wire.CLOSE:
            reader.frames.popleft()
            return True
        return False

    def take_controls(self, reader: FrameReader, *, wait: bool) -> tuple[int, bool]:
        """Read the parent's stream controls: (credit given, whether to stop).

        Reads what has arrived without waiting, or, with *wait*, sleeps until something
        does. A request to stop is also what end of input and SHUTDOWN mean here.
        """
        credit, stop = 0, False
        while True:
            while reader.frames:
                frame = reader.frames.popleft()
                if frame.kind == wire.MORE:
                    credit += 1
                elif frame.kind == wire.CLOSE:
                    stop = True
                elif frame.kind == wire.SHUTDOWN:
                    reader.frames.appendleft(frame)  # for the serving loop, once stopped
                    return credit, True
                else:
                    name = wire.KIND_NAMES.get(frame.kind, frame.kind)
                    raise wire.ProtocolError(f"unexpected {name} message during a stream")
            if credit or stop:
                return credit, stop
            self.nonblocking()
            try:
                count = os.readv(REQUEST_FD, [reader.buffer()])
            except BlockingIOError:
                if not wait:
                    return 0, False
                self._wait(self.incoming)
                continue
            if not count:
                reader.eof()
                return 0, True
            reader.commit(count)


def _encode_items(codec: Codec, items: list[object], limit: int) -> Sequence[Buffer]:
    """Encode *items* as one ITEMS payload, refusing what the parent would refuse."""
    segments = codec.dumps(items)
    size = sum(memoryview(segment).nbytes for segment in segments)
    if size > limit:
        raise ValueError(
            f"the results take {size} bytes, over the pool's frame limit (max_frame_length={limit})"
        )
    if len(segments) > wire.MAX_SEGMENTS:
        raise ValueError(
            f"the results have {len(segments)} out-of-band buffers, more than a frame "
            f"carries ({wire.MAX_SEGMENTS})"
        )
    return segments


def _send_items(link: _Link, codec: Codec, items: list[object], first: int, limit: int) -> int:
    """Send *items* (the first at position *first*) as ITEMS; return the bytes sent, or -1.

    When they cannot travel together (one cannot be encoded, or together they exceed
    the frame limit), each goes in a frame of its own, and the first that cannot travel
    at all is reported as an ERROR of stage "result" with its position (-1 is returned).
    """
    try:
        segments = _encode_items(codec, items, limit)
    except BaseException:
        pass
    else:
        link.send(wire.ITEMS, segments)
        return sum(memoryview(segment).nbytes for segment in segments)
    size = 0
    for offset, item in enumerate(items):
        try:
            segments = _encode_items(codec, [item], limit)
        except BaseException as exc:
            _send_error(link, codec, exc, "result", limit, first + offset)
            return -1
        link.send(wire.ITEMS, segments)
        size += sum(memoryview(segment).nbytes for segment in segments)
    return size


def _read_batch(codec: Codec, frame: Frame) -> tuple[Any, list[Any] | tuple[Any, ...], bool]:
    """Decode a BATCH: (function, calls or items, whether each item is the one argument).

    The pair ``(function, calls)`` holds argument tuples; the triple ``(function, items,
    1)`` (feature "items") holds the one argument of each call.
    """
    batch = codec.loads(frame.segments)
    if not isinstance(batch, (list, tuple)) or len(batch) not in (2, 3):
        raise TypeError(f"a BATCH carries (function, calls), not {type(batch).__name__}")
    one = len(batch) == 3
    if one and batch[2] != 1:
        raise ValueError(f"a BATCH of items gives each call 1 argument, not {batch[2]!r}")
    func, calls = batch[0], batch[1]
    if not isinstance(calls, (list, tuple)):
        raise TypeError(f"a BATCH carries a list of calls, not {type(calls).__name__}")
    return func, calls, one


def _run_batch(link: _Link, codec: Codec, frame: Frame, limit: int) -> None:
    """Answer a BATCH: ITEMS with every result, then END; or ERROR with the failing index."""
    try:
        func, calls, one = _read_batch(codec, frame)
    except BaseException as exc:
        _flush_std()
        _send_error(link, codec, exc, "arguments", limit)
        return
    del frame
    results: list[object] = []
    append = results.append
    try:
        if _EXTEND_KEEPS_PARTIAL:
            # Raised by a call, the results before it are in the list: its length is
            # the index of the call that raised, as with the loops below.
            results.extend(map(func, calls) if one else starmap(func, calls))
        elif one:
            for item in calls:
                append(func(item))
        else:
            for args in calls:
                append(func(*args))
    except BaseException as exc:
        _flush_std()
        if results and _send_items(link, codec, results, 0, limit) < 0:
            return
        _send_error(link, codec, exc, "call", limit, len(results))
        return
    del func, calls
    _flush_std()
    try:
        segments = _encode_items(codec, results, limit)
    except BaseException:
        if _send_items(link, codec, results, 0, limit) >= 0:
            link.send(wire.END, [])
        return
    link.send_buffers(wire.encode_frames([(wire.ITEMS, segments), (wire.END, [])]))


def _run_stream(link: _Link, codec: Codec, frame: Frame, reader: FrameReader) -> None:
    """Run a STREAM: ITEMS as the generator yields, within the parent's credit, then END.

    Each ITEMS frame takes one credit (one MORE from the parent); while there is none,
    items wait here, and past a bound the generator is not advanced until credit comes.
    A CLOSE (or SHUTDOWN, or end of input) closes the generator, which runs its
    ``finally`` blocks, and is answered with END.
    """
    limit = reader.max_frame_length
    try:
        func, args = codec.loads(frame.segments)
    except BaseException as exc:
        _flush_std()
        _send_error(link, codec, exc, "arguments", limit)
        return
    del frame
    try:
        items = iter(func(*args))
    except BaseException as exc:
        _flush_std()
        _send_error(link, codec, exc, "call", limit)
        return
    del func, args
    close = getattr(items, "close", None)
    pending: list[object] = []
    sent = 0  # items sent so far: the position of pending[0]
    credit = 0
    item_bytes = 0  # roughly the size of one item, from the ITEMS frames sent so far
    checked = 0.0
    stopped = False
    # Items go out together while the generator is quick: up to *target* of them, which
    # doubles with every frame sent (from one, so the first item goes at once), or what
    # came within STREAM_LINGER_SECONDS. An item that took that long to produce goes at
    # once, and the target starts again from one.
    target = 1
    first_at = 0.0  # when pending[0] was produced
    slow = True
    clock = time.perf_counter
    try:
        while True:
            now = time.perf_counter()
            full = bool(pending) and (
                len(pending) >= STREAM_HOLD_ITEMS or len(pending) * item_bytes >= STREAM_HOLD_BYTES
            )
            if (full and not credit) or now - checked >= STREAM_CHECK_SECONDS:
                more, stopped = link.take_controls(reader, wait=full and not credit)
                credit += more
                checked = now = time.perf_counter()
                if stopped:
                    break
                if full and not credit:
                    continue
            if (
                pending
                and credit
                and (
                    full
                    or slow
                    or len(pending) >= target
                    or now - first_at >= STREAM_LINGER_SECONDS
                )
            ):
                _flush_std()
                size = _send_items(link, codec, pending, sent, limit)
                if size < 0:
                    return
                item_bytes = max(item_bytes, size // len(pending))
                sent += len(pending)
                pending = []
                credit -= 1
                target = 1 if slow else min(2 * target, STREAM_HOLD_ITEMS)
                now = time.perf_counter()
            # The next items, in one tight loop: as many as may be held (only as many as
            # the target asks for while there is credit to send them), until one took
            # STREAM_LINGER_SECONDS, or the first of them has waited that long.
            room = STREAM_HOLD_ITEMS - len(pending)
            if item_bytes:
                room = min(room, STREAM_HOLD_BYTES // item_bytes - len(pending))
            had = len(pending)
            want = max(1, min(room, target - had) if credit else room)
            if not had:
                first_at = now
            append = pending.append
            last = now
            lingered = False
            try:
                for item in islice(items, want):
                    append(item)
                    now = clock()
                    if now - first_at >= STREAM_LINGER_SECONDS:
                        lingered = True
                        break
                    last = now
            except BaseException as exc:
                close = None  # a generator that raised has finished
                _flush_std()
                if not pending or _send_items(link, codec, pending, sent, limit) >= 0:
                    _send_error(link, codec, exc, "call", limit, sent + len(pending))
                return
            if not lingered and len(pending) - had < want:
                close = None  # the generator has ended
                break
            slow = lingered and now - last >= STREAM_LINGER_SECONDS
        if stopped:
            stop, close = close, None
            if stop is not None:
                try:
                    stop()
                except BaseException as exc:
                    _flush_std()
                    _send_error(link, codec, exc, "call", limit, sent)
                    return
            _flush_std()
            link.send(wire.END, [])
            return
        _flush_std()
        if pending and _send_items(link, codec, pending, sent, limit) < 0:
            return
        link.send(wire.END, [])
    finally:
        if close is not None:
            # Not finished, and not stopped by the parent: an item could not travel.
            try:  # noqa: SIM105 - contextlib is not worth importing at start-up for this
                close()
            except BaseException:
                pass


def _serve(link: _Link, codec: Codec, reader: FrameReader) -> int:
    limit = reader.max_frame_length
    while True:
        frame = link.receive(reader)
        if frame is None:
            return 0
        kind = frame.kind
        if kind != wire.CALL:
            if kind == wire.SHUTDOWN:
                return 0
            if PROTOCOL >= 2 and _serve_other(link, codec, frame, reader):
                del frame
                continue
            name = wire.KIND_NAMES.get(kind, kind)
            print(f"procio worker: unexpected {name} message", file=sys.__stderr__)
            return int(wire.EXIT_PROTOCOL_ERROR)
        # A single call: the usual request, on the shortest path (each function call
        # and each object touched here costs a worker woken from sleep dearly).
        try:
            func, args = codec.loads(frame.segments)
        except BaseException as exc:
            _flush_std()
            _send_error(link, codec, exc, "arguments", limit)
            continue
        del frame
        try:
            result = func(*args)
        except BaseException as exc:
            del func, args
            _flush_std()
            _send_error(link, codec, exc, "call", limit)
            continue
        del func, args
        _flush_std()  # what the function printed goes out before its answer
        try:
            segments = codec.dumps(result)
            only = segments[0] if len(segments) == 1 else None
            size = (
                len(only)
                if type(only) is bytes
                else sum(memoryview(segment).nbytes for segment in segments)
            )
            if size > limit:
                # The parent would refuse the frame and give up on this worker; saying
                # so here keeps the worker, and the caller gets a SerializationError.
                raise ValueError(
                    f"the result takes {size} bytes, over the pool's frame limit "
                    f"(max_frame_length={limit})"
                )
            if len(segments) > wire.MAX_SEGMENTS:
                raise ValueError(
                    f"the result has {len(segments)} out-of-band buffers, more than a "
                    f"frame carries ({wire.MAX_SEGMENTS})"
                )
        except BaseException as exc:
            del result
            _send_error(link, codec, exc, "result", limit)
            continue
        del result
        del only
        link.send(wire.RESULT, segments)
        del segments


def _serve_other(link: _Link, codec: Codec, frame: Frame, reader: FrameReader) -> bool:
    """Serve a message of protocol version 2 other than CALL; ``False`` if it is none."""
    kind = frame.kind
    if kind in (wire.MORE, wire.CLOSE):
        return True  # for a stream that has ended meanwhile: nothing to do
    if kind == wire.BATCH:
        if link.close_follows(reader):
            link.send(wire.END, [])  # dropped before it began: no ITEMS
        else:
            _run_batch(link, codec, frame, reader.max_frame_length)
        return True
    if kind == wire.STREAM:
        _run_stream(link, codec, frame, reader)
        return True
    return False


def _idle_poll(setting: object) -> tuple[float, bool]:
    """Read INIT's optional ``idle_poll``: (seconds to poll after an answer, adaptive)."""
    if setting is None:
        return SPIN_SECONDS, ADAPTIVE
    if not isinstance(setting, dict):
        raise wire.ProtocolError("INIT's idle_poll must be a JSON object")
    seconds = setting.get("seconds", SPIN_SECONDS)
    adaptive = setting.get("adaptive", ADAPTIVE)
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, (int, float))
        or not 0 <= seconds <= 1
        or not isinstance(adaptive, bool)
    ):
        raise wire.ProtocolError(f"INIT's idle_poll is invalid: {setting!r}")
    return float(seconds), adaptive


def _read_init(frame: Frame) -> Init:
    """Check the first message from the parent, which must be INIT, and return it."""
    if frame.kind != wire.INIT:
        raise wire.ProtocolError("the first message must be INIT with one segment")
    init = wire.decode_control(frame.kind, frame.segments)
    version = init.get("protocol")
    if (
        not wire.is_int(version)
        or not wire.MIN_PROTOCOL_VERSION <= version <= wire.PROTOCOL_VERSION
    ):
        raise wire.ProtocolError(f"unsupported protocol version {version!r}")
    # The keys read with a fallback (codec, max_frame_length, sys_path, main, idle_poll)
    # are checked where they are used.
    return init  # type: ignore[return-value]


#: The serving link, once made: the SIGINT handler looks at it.
_LINK: _Link | None = None


def _take_sigint(signum: int, frame: types.FrameType | None) -> None:
    """Let SIGINT pass: interrupted system calls resume, and nothing is raised.

    Except the one the thread watching the parent sends: when the parent has exited
    and the worker sleeps in a read for its next call, the read ends in ParentGone.
    """
    link = _LINK
    if link is not None and link.parent_gone and link.idle:
        link.idle = False
        raise ParentGone


def _watch_parent(link: _Link, serving: int) -> None:
    """Wait, in a thread of its own, for the parent's exit; then wake the idle worker.

    The serving thread may sleep in a blocking read that no end of file ends (a fork of
    the parent holds the pipe). Once the parent has exited, that read is interrupted by
    a SIGINT to the serving thread, whose handler (``_take_sigint``) ends it in
    ParentGone, so that the worker ends as at end of input. A function that runs is
    left to finish: the serving thread sees the mark before it next sleeps. If the
    function has put a handler of its own on SIGINT, which would let the read resume,
    an idle worker ends at once instead (``os._exit``: its own exit handlers do not run).
    """
    # Signals meant for the worker go to the serving thread, as in a worker without
    # this thread.
    signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
    watcher = select.poll()
    watcher.register(link.pidfd, select.POLLIN)
    while not watcher.poll():
        pass
    link.parent_gone = True
    while True:
        if link.idle:
            if signal.getsignal(signal.SIGINT) is _take_sigint:
                signal.pthread_kill(serving, signal.SIGINT)
            else:
                os._exit(0)
        # A signal that comes just before the read begins may be taken before the
        # read, and the read then sleeps: send it again a little later.
        time.sleep(PARENT_CHECK_SECONDS)


def main(argv: list[str]) -> int:
    """Run the worker on the protocol descriptors named in *argv*; return the exit status."""
    global REQUEST_FD, RESPONSE_FD
    REQUEST_FD, RESPONSE_FD = int(argv[0]), int(argv[1])
    # Inherited through pass_fds, they are inheritable here: a program the function
    # starts must not get them (it could read calls, forge replies, or keep the pipes
    # open after this worker dies).
    for fd in (REQUEST_FD, RESPONSE_FD):
        os.set_inheritable(fd, False)  # noqa: FBT003 - positional-only
    # A terminal's Ctrl-C reaches the whole foreground process group; the parent decides
    # what happens to its workers, so an idle or busy worker does not die of it. Caught
    # by a handler, not ignored: an ignored signal stays ignored across exec, and then
    # no program the function starts could be stopped with Ctrl-C or SIGINT.
    signal.signal(signal.SIGINT, _take_sigint)
    hello: Hello = {
        "protocol": wire.PROTOCOL_VERSION,
        "protocols": list(range(wire.MIN_PROTOCOL_VERSION, wire.PROTOCOL_VERSION + 1)),
        "pid": os.getpid(),
        "codecs": _available_codecs(),
        "features": FEATURES,
        "implementation": sys.implementation.name,
        "python": ".".join(map(str, sys.version_info[:3])),
    }
    reader = wire.FrameReader()
    try:
        link = _Link()
        global _LINK
        _LINK = link
        link.send(wire.HELLO, [wire.encode_control(hello)])
        frame = link.receive(reader)
        if frame is None:
            return 0
        init = _read_init(frame)
        global PROTOCOL
        PROTOCOL = init["protocol"]
        reader.max_frame_length = int(init.get("max_frame_length", reader.max_frame_length))
        link.spin, link.adaptive = _idle_poll(init.get("idle_poll"))
        global IDLE_POLL
        IDLE_POLL = (link.spin, link.adaptive)
        sys.path[:] = init.get("sys_path", sys.path)
        main_module = _install_main(init.get("main"))
        codec_name = init.get("codec", "pickle")
        try:
            codec = (
                wire.builtin_codec(codec_name)
                if codec_name in CODECS
                else wire.import_object(codec_name)()
            )
        except Exception as exc:
            refusal: Ready = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            link.send(wire.READY, [wire.encode_control(refusal)])
            return 1
        # A codec of the worker's own reads its large out-of-band segments as bytes
        # objects made in place; another one gets bytearrays, as documented.
        reader.bytes_in_place = codec_name in CODECS
        ready: Ready = {"ok": True}
        link.send(wire.READY, [wire.encode_control(ready)])
        if init.get("main_ahead") is True and isinstance(main_module, _ParentMain):
            # Started ahead of need: the parent's main module runs now, before any
            # call is read, and a first call of one of its functions finds it ready.
            main_module._procio_run_ahead()
        return _serve(link, codec, reader)
    except wire.ProtocolError as exc:
        print(f"procio worker: protocol error: {exc}", file=sys.__stderr__)
        return int(wire.EXIT_PROTOCOL_ERROR)
    except (BrokenPipeError, ParentGone):
        # Nobody is left to answer: end quietly, as at end of input.
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
