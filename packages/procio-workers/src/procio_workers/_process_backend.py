"""The default worker backend: local worker processes speaking the wire protocol.

How one call travels (the wire protocol page specifies every message)::

    parent process                                       worker process (its program)
    ------------------------------------------           ----------------------------
    caller: await pool.run_sync(func, *args)
      |
    WorkerPool: limits, picks an idle worker
      |  backend.prepare_call(func, args)      before a worker is reserved:
      |    Serializer.dump_call -> segments    a bad argument fails here
      |    _wire.encode_frame(CALL, segments)
      v
    ProcessWorker.send_nowait ----- request pipe ----->  _Link.receive -> FrameReader
      (or finish_call, when the pipe is full)              |
                                                           |  codec.loads(segments)
                                                           v
                                                         func(*args)
                                                           |  codec.dumps(result)
                                                           v
    ProcessWorker.reply_nowait <--- response pipe -----  RESULT, or ERROR (JSON
      (or finish_call, through the event loop)           header, then the exception)
      |  Serializer.load_reply(segments) -> value, or the exception rebuilt
      v
    WorkerPool: the worker is idle again (or retired, or dropped) -> caller

A map's chunk (protocol version 2) goes as one frame and comes back in a few::

    prepare_batch: BATCH (func, [args, ...])  ---->  func(*args) for each, in order
    call_batch <----  ITEMS [results] + END, or ITEMS [results before k] + ERROR {index: k}

A generator call, with credit so that the worker runs at most a bounded way ahead::

    prepare_stream: STREAM (func, args) + MORE x4  ---->  iter(func(*args))
    stream() <----  ITEMS [items] (one per MORE)  <----   items as they are yielded
    stream() ---->  MORE for each ITEMS frame read
    aclose() ---->  CLOSE  ---->  generator closed  ---->  END (or ERROR {index})

Before any call, the handshake: HELLO (worker) -> INIT (parent) -> READY (worker), each
a JSON object declared in ``_wire``; SHUTDOWN (or end of input) retires the worker.
Output the worker writes to fd 1 and 2 travels on two more pipes, forwarded by
:meth:`ProcessWorker.forward_output`, apart from the protocol.

The pieces: ``_channel.FrameChannel`` carries the frames, ``_forwarder.OutputForwarder``
the output, ``_lifecycle.WorkerLifecycle`` holds the worker's state; this module speaks
the protocol over them.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, ExitStack, suppress
from pathlib import Path
from typing import Any, Literal, cast

import anyio

# The default launcher starts workers with procio_process. Importing it along with the
# backend, as anyio.to_process imports its subprocess support, keeps the import out of
# the first worker's start, where it cost about as much as starting the worker itself.
import procio_process  # noqa: F401
from anyio import (
    BrokenResourceError,
    CancelScope,
    ClosedResourceError,
    get_cancelled_exc_class,
    move_on_after,
)
from anyio.abc import Process, TaskGroup

from . import _wire
from ._channel import CAN_COUNT_UNREAD, ChannelError, FrameChannel
from ._errors import (
    BatchError,
    BrokenWorkerProcess,
    RemoteTraceback,
    SerializationError,
    WorkerError,
)
from ._forwarder import _OUTPUT_RETRY, OutputForwarder, _always_room, _parent_streams
from ._hosting import interrupts_go_to_main_task
from ._lifecycle import WorkerLifecycle, WorkerState
from ._serializers import PickleSerializer
from .abc import PENDING as PENDING
from .abc import Buffer, Launcher, Serializer, Worker, WorkerBackend

#: Called with ``1`` or ``2`` (the worker's descriptor) and the bytes written to it.
OutputHandler = Callable[[int, bytes], None]

WORKER_PROGRAM = str(Path(__file__).with_name("_worker.py"))

# Loads the worker program by path, so that neither the package directory (which holds
# a module called ``abc``) nor the package itself is ever imported in the worker: the
# worker program needs nothing of it but the wire module next to it.
WORKER_MODULE = "_procio_worker"
# A source file loader keeps the program's compiled code cached, as an import would;
# importlib.util is not used, since it costs the worker's start an import of contextlib.
BOOTSTRAP = (
    "import sys,importlib.machinery as i;"
    f"m=type(sys)('{WORKER_MODULE}');m.__file__=p=sys.argv[1];sys.modules[m.__name__]=m;"
    "i.SourceFileLoader(m.__name__,p).exec_module(m);sys.exit(m.main(sys.argv[2:]))"
)

_PIPE_SIZE = 1 << 20
# After a worker exits, how long its output pipes may stay open (held by a grandchild
# that inherited them) before the parent stops forwarding and closes its ends.
_OUTPUT_GRACE = 0.5
_RETIRE_GRACE = 2.0
# How long a worker polls for its next call after an answer, by default (the worker's
# own SPIN_SECONDS); a worker is taken to be still polling for the first three quarters of
# its window, and the parent then polls for a reply for up to _REPLY_POLL.
_IDLE_POLL_SECONDS = 200e-6
_AWAKE_SHARE = 0.75
_REPLY_POLL = 50e-6
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", lambda: None)

#: The smallest frame limit a backend accepts: every control message fits in it, and an
#: error report can always be cut down to it.
MIN_FRAME_LENGTH = 512

# Whether a child's exit can be seen without reaping it, and how.
_CAN_PEEK_AT_EXIT = hasattr(os, "waitid") and hasattr(os, "WNOWAIT")
_PEEK_FLAGS = (os.WEXITED | os.WNOHANG | os.WNOWAIT) if _CAN_PEEK_AT_EXIT else 0


#: Workers speak the protocol over inherited POSIX pipes; Windows has no such thing.
POSIX = sys.platform != "win32"

if sys.platform != "win32":
    import fcntl

    _F_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)
else:  # pragma: no cover - Windows
    _F_SETPIPE_SZ = None


_logger = logging.getLogger("procio.workers")


def main_module_spec() -> _wire.MainSpec | None:
    """Describe how a worker finds the parent's ``__main__`` (``None``: it cannot)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name and name != "__main__":
        return {"module": name}
    path = getattr(main, "__file__", None)
    if path and os.path.isfile(path):
        return {"path": os.path.abspath(path)}
    return None


def _grow_pipe(fd: int) -> None:
    if _F_SETPIPE_SZ is not None:
        # Best effort: unprivileged processes are capped by /proc/sys/fs/pipe-max-size.
        with suppress(OSError):
            fcntl.fcntl(fd, _F_SETPIPE_SZ, _PIPE_SIZE)


def _is_number(value: object, kinds: type | tuple[type, ...]) -> bool:
    """Whether *value* is of *kinds*, ``bool`` excepted (a flag is no count)."""
    return isinstance(value, kinds) and not isinstance(value, bool)


def _pipe(read_stack: ExitStack, write_stack: ExitStack) -> tuple[int, int]:
    """Open a pipe whose ends are closed when their stacks are."""
    read_end, write_end = os.pipe()
    read_stack.callback(os.close, read_end)
    write_stack.callback(os.close, write_end)
    return read_end, write_end


def _inheritable_fds() -> list[int]:
    """Return this process's inheritable descriptors above 2 (what a child would get)."""
    directory = "/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"
    found = []
    for name in os.listdir(directory):
        fd = int(name)
        try:
            if fd > 2 and os.get_inheritable(fd):
                found.append(fd)
        except OSError:
            continue  # the descriptor of the listing itself, closed by now
    return found


def _rebuild_error(
    serializer: Serializer, segments: list[bytearray | memoryview]
) -> tuple[BaseException, int | None]:
    """Rebuild the exception an ERROR reports, and the item position it names, if any.

    Its JSON header is decoded once for both; the exception object, if the worker could
    send one, follows in the later segments.
    """
    try:
        meta = _wire.decode_control(_wire.ERROR, segments[:1])
    except _wire.ProtocolError:
        return WorkerError("ProtocolError", "the worker sent an unreadable error", ""), None
    index = _wire.error_index(meta)
    try:
        type_name = str(meta["type"])
    except KeyError:
        return WorkerError("ProtocolError", "the worker sent an unreadable error", ""), index
    message = str(meta.get("message", ""))
    traceback = str(meta.get("traceback", ""))
    stage = meta.get("stage", "call")
    remote = RemoteTraceback(traceback)
    if stage in ("arguments", "result"):
        what = "the call's arguments could not be rebuilt in the worker"
        if stage == "result":
            what = "the function's result could not be serialized in the worker"
        error: BaseException = SerializationError(f"{what}: {type_name}: {message}")
        error.__cause__ = remote
        return error, index
    exception: BaseException | None = None
    if len(segments) > 1:
        with suppress(Exception):
            loaded = serializer.load_reply([memoryview(segment) for segment in segments[1:]])
            if isinstance(loaded, BaseException):
                exception = loaded
    if isinstance(exception, Exception):
        exception.__cause__ = remote
        return exception, index
    error = WorkerError(type_name, message, traceback, exception)
    error.__cause__ = remote
    return error, index


class _Batch:
    """A chunk of a map, ready to go: the BATCH frame, and its calls one by one.

    Iterating it gives each call as a CALL frame: what a version-1 worker takes, and
    what the default :meth:`Worker.call_batch` of a worker that wraps this backend's
    workers sends.
    """

    __slots__ = ("backend", "calls", "frame", "func")

    def __init__(
        self,
        backend: ProcessBackend,
        func: Callable[..., object],
        calls: list[tuple[Any, ...]],
        frame: list[Buffer],
    ) -> None:
        self.backend = backend
        self.func = func
        self.calls = calls
        self.frame = frame

    def __iter__(self) -> Iterator[list[Buffer]]:
        for args in self.calls:
            yield self.backend.prepare_call(self.func, args)


class _Items:
    """A chunk of a one-argument map, ready to go as a BATCH of items (feature "items")."""

    __slots__ = ("frame",)

    def __init__(self, frame: list[Buffer]) -> None:
        self.frame = frame


class _Stream:
    """A call of a generator function, ready to go as a STREAM frame."""

    __slots__ = ("frame",)

    def __init__(self, frame: list[Buffer]) -> None:
        self.frame = frame


#: How many ITEMS frames a stream may have on the way before the parent reads them.
_STREAM_CREDIT = 4
_MORE = bytes(_wire.encode_frame(_wire.MORE, [])[0])
_CLOSE = bytes(_wire.encode_frame(_wire.CLOSE, [])[0])


class ProcessWorker(WorkerLifecycle, Worker):
    """A local worker process; built by :class:`ProcessBackend`.

    Its pipes are a :class:`FrameChannel` (the protocol) and an
    :class:`OutputForwarder` (stdout and stderr), its lifecycle a
    :class:`WorkerLifecycle` state. What is left here, some 600 lines, is the
    protocol's conversation itself: the handshake, a call with its fast path, a batch
    (and one queued behind it), a stream, and the ending. They stay in one class on
    purpose: each of them moves the same state, reads the same channel and breaks the
    worker the same way (:meth:`_break`), and the fast path of a call must not pay for
    a layer between them.
    """

    _GONE_WHILE_IDLE = "the worker had exited while idle"

    def __init__(
        self,
        backend: ProcessBackend,
        process: Process,
        request_fd: int,
        response_fd: int,
        output_fds: Mapping[int, int],
    ) -> None:
        self._state = WorkerState.STARTING
        self._backend = backend
        self.process = process
        self.pid = process.pid
        self._channel = channel = FrameChannel(
            request_fd, response_fd, backend.max_frame_length, self._exited_now
        )
        self._output = OutputForwarder(
            output_fds, backend.output, backend._output_room, pid=process.pid
        )
        self._watch_scope = CancelScope()
        # Bound once: the fast path of a call goes through these.
        self._reader = channel.reader
        self._write = channel.request.write
        self._readinto = channel.response.readinto
        self._forward_pending_output = self._output.forward_pending
        self._broken: BrokenWorkerProcess | None = None
        #: The protocol version agreed in the handshake.
        self.protocol = _wire.PROTOCOL_VERSION
        # The worker's HELLO "features"; and what queue_batch could not write at once.
        self._features: frozenset[str] = frozenset()
        self._queued_rest: list[Buffer] = []
        # How many batches wait in the worker behind the one it runs (queue_batch).
        self._queued = 0
        # The state of a call between call_nowait and finish_call.
        self._unsent: list[Buffer] = []
        self._unsent_started = False
        self._problem: str | None = None
        self._call_size = 0  # the size of the CALL send_nowait wrote whole, else 0
        # finish_call waits before its first read: reply_nowait found the response pipe
        # empty, or the worker was asleep when the call went out.
        self._found_empty = False
        self._answered = 0.0  # time.perf_counter() when the last reply arrived
        # Whether the worker polls for the next call after its answer (with adaptive
        # polling it does so only while calls come back to back, as it sees them: the
        # last two each within its polling time of the answer before; see _worker).
        self._spinning = backend._idle_poll_seconds > 0
        self._quick = True  # whether the last call came that soon after the reply before
        self._awake = False  # whether the worker was taken to be polling for this call

    @property
    def alive(self) -> bool:
        """Whether the worker is ready for a call: idle, its process running."""
        # Not process.returncode: polling the child on every call costs a system call;
        # the exit watcher notices the exit (a pidfd on Linux), whoever holds the pipes.
        return self._state is _IDLE and not self._channel.peer_gone

    # -- output and exit -------------------------------------------------------------

    async def forward_output(self) -> None:
        """Forward both output pipes until they close (run as a background task)."""
        with self._watch_scope:
            async with anyio.create_task_group() as tg:
                tg.start_soon(interrupts_go_to_main_task(self._watch_exit))
                await self._output.run()

    async def _watch_exit(self) -> None:
        """Wake a call waiting on the protocol pipes as soon as the worker exits.

        Normally the worker's exit closes the pipes and the call sees end of file. But a
        fork of the worker (``os.fork()``, a ``fork`` multiprocessing pool in the
        function) holds the same pipes, inheritable or not, and then no end of file or
        broken pipe ever comes: the call would wait for the fork. Waiting on the exit
        itself (a pidfd on Linux, no thread) ends such a call at once.
        """
        await self.process.wait()
        self._channel.peer_exited()

    def _exited_now(self) -> bool:
        """Whether the worker has exited, asking the system if the loop has not told us.

        One non-blocking ``waitid``, which leaves the reaping to others.
        """
        if self._channel.peer_gone:
            return True
        if _CAN_PEEK_AT_EXIT:
            try:
                state = os.waitid(os.P_PID, self.process.pid, _PEEK_FLAGS)
            except ChildProcessError:
                # Reaped already, or not our own child (a launcher's wrapper).
                return self.process.returncode is not None
            return state is not None
        return self.process.returncode is not None

    def stderr_tail(self) -> list[str]:
        """Return the last lines the worker wrote to its standard error."""
        return self._output.stderr_tail()

    # -- the protocol --------------------------------------------------------------

    async def _send(self, buffers: list[Buffer], *, started: bool = False) -> None:
        try:
            await self._channel.send(buffers, started=started)
        except ChannelError as exc:
            raise await self._break(exc.reason, started=exc.sent) from exc.__cause__

    async def _receive(self, call_size: int = 0, wait_first: bool = False) -> _wire.Frame:
        """Receive a frame; *call_size*: the size of a CALL just sent whole, if any.

        If the worker is lost before it read any of that CALL, the call never reached
        it (``started=False``), and the pool may run it on another worker. *wait_first*:
        the response pipe was just found empty (see ``FrameChannel.receive``).
        """
        try:
            return await self._channel.receive(wait_first=wait_first)
        except ChannelError as exc:
            started = not call_size or self._channel.unread_requests() != call_size
            raise await self._break(exc.reason, started=started) from exc.__cause__

    async def _kill_and_reap(self) -> None:
        """Kill the worker if it still runs, reap it, and let its output drain a while."""
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.kill()
        await self.process.wait()
        with move_on_after(_OUTPUT_GRACE):
            await self._output.wait_closed()

    async def _break(self, reason: str, *, started: bool = True) -> BrokenWorkerProcess:
        """Mark the worker broken, reap it and describe what happened.

        *started*: whether the call under way had reached the worker.
        """
        self._broke()
        with CancelScope(shield=True):
            if self.process.returncode is None:
                # It may be on its way out after closing the pipe: give it a moment to
                # report its own exit status before deciding for it.
                with move_on_after(0.2):
                    await self.process.wait()
            await self._kill_and_reap()
        self._broken = BrokenWorkerProcess(
            reason,
            pid=self.pid,
            returncode=self.process.returncode,
            stderr_tail=self.stderr_tail(),
            started=started,
        )
        return self._broken

    async def _control(self, kind: int) -> dict[str, Any]:
        """Receive a control message of *kind* and return its JSON object, unchecked."""
        frame = await self._receive()
        if frame.kind != kind:
            raise await self._break(
                f"expected {_wire.KIND_NAMES[kind]}, got {_wire.KIND_NAMES[frame.kind]} "
                f"with {len(frame.segments)} segments"
            )
        try:
            return _wire.decode_control(kind, frame.segments)
        except _wire.ProtocolError as exc:
            raise await self._break(str(exc)) from None

    async def handshake(self, init: _wire.Init) -> _wire.Hello:
        """Read HELLO, send INIT and read READY; return the worker's HELLO."""
        hello = await self._control(_wire.HELLO)
        # HELLO's "protocols" lists every version the worker speaks (a version-1 worker
        # names only its one "protocol"): the newest that both speak is chosen.
        common = _wire.hello_versions(hello)
        if not common:
            raise await self._break(
                f"unsupported protocol version {hello.get('protocol')!r} "
                f"(this parent speaks {_wire.MIN_PROTOCOL_VERSION} to {_wire.PROTOCOL_VERSION})"
            )
        self.protocol = max(common)
        features = hello.get("features")
        if isinstance(features, list):
            self._features = frozenset(name for name in features if isinstance(name, str))
        init = init.copy()
        init["protocol"] = self.protocol
        codec = init["codec"]
        codecs = hello.get("codecs")
        if ":" not in codec and (not isinstance(codecs, list) or codec not in codecs):
            raise await self._break(f"the worker does not support the codec {codec!r}")
        await self._send(_wire.encode_frame(_wire.INIT, [_wire.encode_control(init)]))
        ready = await self._control(_wire.READY)
        if ready.get("ok") is not True:
            raise await self._break(f"the worker could not start: {ready.get('error')}")
        self._started()
        # Checked above: a version both speak, and the codec. Its other keys are
        # informative and left as the worker sent them.
        return cast("_wire.Hello", hello)

    async def call(self, request: Any) -> object:
        """Send a prepared CALL frame and return the result (or raise the error)."""
        outcome = self.call_nowait(request)
        if outcome is PENDING:
            outcome = await self.finish_call()
        return outcome

    def call_nowait(self, request: Any) -> object:
        """Start a call without waiting: return its outcome, or :data:`PENDING`.

        A small CALL frame goes out in one write and the reply is read at once: the
        worker has often answered by then, and the call then costs no trip through the
        event loop. :data:`PENDING` means :meth:`finish_call` must complete it (the
        pipe was full, the reply has not come yet, or something went wrong that
        :meth:`finish_call` reports).
        """
        self.send_nowait(request)
        return self.reply_nowait()

    def send_nowait(self, request: Any) -> bool:
        """Take a call over, writing its CALL frame now if it goes out whole at once.

        Always ``True`` (a worker found broken raises instead): :meth:`reply_nowait`,
        then :meth:`finish_call` if that returns :data:`PENDING`, complete the call.
        Whatever could not be written at once, :meth:`finish_call` sends, or reports
        why not. (A subclass whose :meth:`call` does more must return ``False`` here:
        the pool would otherwise go round it.)

        Raises:
            BrokenWorkerProcess: the worker broke, or was closed, before this call.
            WorkerStateError: the worker is still starting or busy with another call.
        """
        if self._state is not _IDLE:
            self._refuse_call()
        self._state = _BUSY  # the move "call" of WorkerLifecycle, on the fast path
        if self._channel.peer_gone or (not CAN_COUNT_UNREAD and self._exited_now()):
            # It exited while idle: the call never reaches it, so the pool may run it on
            # another worker. An exit the event loop has not reported yet is found out
            # after the write instead (which a fork of the worker holding the request
            # pipe lets succeed): the CALL is then still unread in the pipe (finish_call).
            # Where that cannot be counted, the system is asked here, one call each time.
            self._problem = self._GONE_WHILE_IDLE
            return True
        self._problem = None
        self._call_size = 0
        self._found_empty = False
        buffers = list(request)
        self._unsent, self._unsent_started = buffers, False
        if len(buffers) != 1 or type(buffers[0]) is not bytes:
            return True
        whole = buffers[0]
        try:
            written = self._write(whole)
        except (ClosedResourceError, BrokenResourceError):
            return True  # finish_call writes again and handles the error
        if written is None:
            return True
        if written < len(whole):
            self._unsent, self._unsent_started = [memoryview(whole)[written:]], True
            return True
        self._unsent = []
        self._call_size = written
        # A worker that answered moments ago is still polling for this call and will
        # answer within microseconds: reply_nowait polls for the reply briefly, which
        # costs far less than waiting through the event loop. One that went to sleep
        # takes longer to wake than is worth polling for.
        backend = self._backend
        gap = time.perf_counter() - self._answered
        self._awake = awake = self._spinning and gap < backend._worker_awake
        # A reply from a sleeping worker is waited for before the first read (a read
        # sooner could only find the pipe empty); reply_nowait reads at once.
        self._found_empty = not awake
        if backend._idle_poll_adaptive:
            quick = gap < backend._idle_poll_seconds
            self._spinning = quick and self._quick
            self._quick = quick
        return True

    def _refuse_call(self) -> None:
        if self._broken is not None:
            raise self._broken
        if self._state in (WorkerState.CLOSING, WorkerState.CLOSED):
            raise BrokenWorkerProcess(
                "the worker was closed before the call",
                pid=self.pid,
                returncode=self.process.returncode,
                stderr_tail=self.stderr_tail(),
                started=False,
            )
        self._call_begins()  # refused: raises WorkerStateError

    @property
    def reply_may_be_quick(self) -> bool:
        """Whether the worker was taken to be polling for the call just sent.

        One that went to sleep takes longer to wake than a pass of the event loop: the
        pool then waits for its reply at once, and :meth:`finish_call` waits before
        its first read (a read sooner could only find the pipe empty), which makes
        that wait the call's schedule point. A call not sent whole, or one with a
        problem found, goes the usual way.
        """
        return self._awake or bool(self._unsent) or self._problem is not None

    def reply_nowait(self) -> object:
        """Read the reply to a call :meth:`send_nowait` sent, or return :data:`PENDING`."""
        if self._unsent or self._problem is not None:
            return PENDING  # not sent whole, or not at all: for finish_call
        reader = self._reader
        if not reader.frames:
            view = reader.buffer()
            deadline = 0.0
            awake = self._awake
            readinto = self._readinto
            try:
                while (count := readinto(view)) is None:
                    if not awake:
                        self._found_empty = True
                        return PENDING
                    now = time.perf_counter()
                    if not deadline:
                        deadline = now + _REPLY_POLL
                    elif now > deadline:
                        self._found_empty = True
                        return PENDING
                    _yield_cpu()  # the worker may share this CPU
            except (ClosedResourceError, BrokenResourceError):
                return PENDING  # finish_call reads again (and waits, or reports)
            finally:
                del view
            if not count:
                return PENDING
            try:
                reader.commit(count)
            except _wire.ProtocolError as exc:
                self._problem = str(exc)
                return PENDING
            if not reader.frames:
                return PENDING
        self._answered = time.perf_counter()
        return self._outcome(reader.frames.popleft())

    async def finish_call(self) -> object:
        """Complete the call that :meth:`reply_nowait` left :data:`PENDING`."""
        if self._problem is None:
            if self._unsent:
                await self._send(self._unsent, started=self._unsent_started)
                self._unsent = []
            # A reply found not there yet is waited for before the next read.
            frame = await self._receive(self._call_size, self._found_empty)
            self._answered = time.perf_counter()
            outcome = self._outcome(frame)
            if outcome is not PENDING:
                return outcome
        reason, self._problem = self._problem, None
        raise await self._break(
            reason or "the worker broke the protocol", started=reason != self._GONE_WHILE_IDLE
        )

    def _outcome(self, frame: _wire.Frame) -> object:
        """Return the result in *frame*, raise its error, or note a protocol problem."""
        self._forward_pending_output()
        kind = frame.kind
        if kind == _wire.RESULT or kind == _wire.ERROR:
            # The call is answered, whether or not the answer can be rebuilt here.
            if self._state is _BUSY:
                self._state = _IDLE  # the move "answer" of WorkerLifecycle, inlined
            else:
                self._answered_now()
            if kind == _wire.ERROR:
                raise _rebuild_error(self._backend.serializer, frame.segments)[0]
            try:
                return self._backend.serializer.load_reply(
                    [memoryview(segment) for segment in frame.segments]
                )
            except Exception as exc:
                raise SerializationError(
                    f"the result of the call could not be rebuilt in the parent: {exc!r}"
                ) from exc
        self._problem = f"unexpected {_wire.KIND_NAMES[kind]} message"
        return PENDING

    # -- batches and streams (protocol version 2) -----------------------------------

    async def _begin(self, buffers: list[Buffer]) -> None:
        """Send the first frame of a batch or a stream, as send_nowait would check it."""
        if self._state is not _IDLE:
            self._refuse_call()
        self._call_begins()
        if self._exited_now():
            raise await self._break(self._GONE_WHILE_IDLE, started=False)
        await self._send(list(buffers))

    def _load_items(self, frame: _wire.Frame) -> list[object]:
        try:
            items = self._backend.serializer.load_reply(
                [memoryview(segment) for segment in frame.segments]
            )
        except Exception as exc:
            raise SerializationError(
                f"results could not be rebuilt in the parent: {exc!r}"
            ) from exc
        if not isinstance(items, list):
            raise SerializationError(f"ITEMS must carry a list, not {type(items).__name__}")
        return items

    async def _unexpected(self, frame: _wire.Frame) -> BrokenWorkerProcess:
        return await self._break(f"unexpected {_wire.KIND_NAMES[frame.kind]} message")

    async def call_batch(self, request: Any) -> list[object]:
        """Run a chunk of calls prepared by :meth:`ProcessBackend.prepare_batch`."""
        if not isinstance(request, _Batch):
            return await super().call_batch(request)
        if self.protocol < 2:
            # A version-1 worker takes one CALL at a time.
            return await super().call_batch(request)
        await self._begin(request.frame)
        return await self.receive_batch()

    @property
    def pipelines(self) -> bool:
        """Whether a BATCH may wait in the worker's pipe behind the one it runs.

        The worker says so with the feature ``"pipeline"`` in its HELLO: it then also
        drops a queued BATCH that a CLOSE follows before the worker began it.
        """
        return self.protocol >= 2 and "pipeline" in self._features

    @property
    def takes_items(self) -> bool:
        """Whether a BATCH may carry the items of a one-argument map (feature ``"items"``).

        Such a BATCH (made by ``ProcessBackend._prepare_items``) has no argument tuple
        per call to build, pickle and unpickle. It goes through :meth:`send_batch` and
        :meth:`queue_batch` like any other.
        """
        return self.protocol >= 2 and "items" in self._features

    async def send_batch(self, request: Any) -> None:
        """Send a BATCH prepared by :meth:`ProcessBackend.prepare_batch`, whole.

        Its answer is read by :meth:`receive_batch`. Raises :exc:`BrokenWorkerProcess`
        with ``started=False`` if the worker had exited while idle.
        """
        await self._begin(request.frame)

    def queue_batch(self, request: Any) -> None:
        """Write a BATCH behind the one the worker runs, without waiting for room.

        What the pipe does not take at once is written by :meth:`finish_queued`, once
        the answer before it has been read: the worker writes that answer before it
        reads further, so waiting for room here could wait for ever.
        """
        buffers = list(request.frame)
        try:
            written = self._channel.request.writev(cast("list[bytes]", buffers)) or 0
        except (ClosedResourceError, BrokenResourceError):
            # The worker is gone: the answer awaited first says so.
            written = 0
        self._queued_rest = _wire.skip_written(buffers, written)
        # Answered after the running batch, which leaves the worker busy with this one.
        self._queued += 1

    async def finish_queued(self) -> None:
        """Write what :meth:`queue_batch` left of its frame (a no-op if nothing)."""
        rest, self._queued_rest = self._queued_rest, []
        if rest:
            await self._send(rest)

    def try_drop_queued(self) -> bool:
        """Ask the worker now to drop the BATCH sent last, unless it has begun it.

        ``False`` if that cannot be asked without waiting (its frame is not all written,
        or the pipe is full): then only :meth:`drop_queued` can, once the answers before
        it have been read. Either way its answer is still to be read: an ``END`` alone if
        it was dropped.
        """
        if self._queued_rest:
            return False
        try:
            return self._channel.request.write(_CLOSE) == len(_CLOSE)
        except (ClosedResourceError, BrokenResourceError):
            return False  # the worker is gone (its answer says so)

    async def drop_queued(self) -> None:
        """Like :meth:`try_drop_queued`, writing the rest of its frame and waiting for room.

        Only while no answer to an earlier BATCH is awaited: the worker writes that
        answer before it reads further.
        """
        rest, self._queued_rest = self._queued_rest, []
        await self._send([*rest, _CLOSE])

    def answer_arrived(self) -> bool:
        """Whether an answer has begun to arrive (read, or waiting in the pipe); no wait.

        ``False`` where the pipe cannot be looked into (see ``CAN_COUNT_UNREAD``).
        """
        reader = self._reader
        if reader.frames or reader.mid_frame:
            return True
        if self._channel.response.fd < 0:
            return True  # closed: whoever reads next finds out at once
        return bool(self._channel.unread_responses())

    async def wait_for_answer(self) -> None:
        """Wait until an answer begins to arrive, or the worker is gone.

        Unlike :meth:`receive_batch`, this may be cancelled without losing anything.
        """
        channel = self._channel
        if self._reader.frames or self._reader.mid_frame or channel.peer_gone:
            return
        # Woken by the worker's exit too (the channel notifies the fd's waiters).
        with suppress(ClosedResourceError):
            await channel.response.wait_readable()

    async def receive_batch(self) -> list[object]:
        """Read the answer to the oldest BATCH sent: its results, or raise its error."""
        results: list[object] = []
        while True:
            frame = await self._receive()
            self._forward_pending_output()
            if frame.kind == _wire.ITEMS:
                try:
                    results += self._load_items(frame)
                except SerializationError as exc:
                    # Stay in step with the worker: read the rest of its answer first.
                    await self._skip_to_end()
                    raise BatchError(len(results), results, exc) from None
            elif frame.kind == _wire.END:
                self._answered = time.perf_counter()
                self._batch_answered()
                return results
            elif frame.kind == _wire.ERROR:
                self._answered = time.perf_counter()
                self._batch_answered()
                error, index = _rebuild_error(self._backend.serializer, frame.segments)
                if index is None:
                    raise error
                raise BatchError(index, results[:index], error)
            else:
                raise await self._unexpected(frame)

    def _batch_answered(self) -> None:
        """A batch's answer has been read: the worker is idle, or on to a queued one."""
        if self._queued:
            self._queued -= 1
        else:
            self._answered_now()

    async def _skip_to_end(self) -> None:
        """Read and drop the rest of an answer, up to its END or ERROR."""
        while True:
            frame = await self._receive()
            if frame.kind in (_wire.END, _wire.ERROR):
                self._batch_answered()
                return
            if frame.kind != _wire.ITEMS:
                raise await self._unexpected(frame)

    async def stream(
        self, request: Any, *, cancellable: bool = False
    ) -> AsyncIterator[list[object]]:
        """Run a generator prepared by :meth:`ProcessBackend.prepare_stream`.

        Yields the groups of items that the worker sends; closing the iterator early
        asks the worker to close the generator and waits for it to do so, unless it was
        cancelled with *cancellable*: the worker is then killed at once.
        """
        if not isinstance(request, _Stream):
            raise NotImplementedError("not a stream prepared by this backend")
        if self.protocol < 2:
            raise NotImplementedError(
                f"the worker speaks protocol version {self.protocol}, which has no streams"
            )
        await self._begin([*request.frame, _MORE * _STREAM_CREDIT])
        finished = False
        reader = self._reader
        try:
            while True:
                frames = [await self._receive()]
                # Frames that came in the same read are taken together: one hand-over to
                # the reader and one write of credit for all of them.
                while reader.frames:
                    frames.append(reader.frames.popleft())
                self._forward_pending_output()
                if any(frame.kind in (_wire.END, _wire.ERROR) for frame in frames):
                    # The worker has ended the stream: whatever happens below, it is
                    # idle again, and there is nothing to close.
                    finished = True
                group: list[object] = []
                read = 0
                last: _wire.Frame | None = None
                for frame in frames:
                    if frame.kind == _wire.ITEMS and last is None:
                        group += self._load_items(frame)
                        read += 1
                    elif frame.kind in (_wire.END, _wire.ERROR) and last is None:
                        last = frame
                    else:
                        raise await self._unexpected(frame)
                if read and last is None:
                    # Credit for the frames read: the worker goes on while these items
                    # are used.
                    await self._send([_MORE * read])
                if group:
                    yield group
                if last is not None:
                    if last.kind == _wire.ERROR:
                        raise _rebuild_error(self._backend.serializer, last.segments)[0]
                    return
        except get_cancelled_exc_class():
            if cancellable and not finished:
                # Waiting for the worker is what was cancelled: no waiting for the
                # generator to reach its next item either.
                self.kill()
            raise
        finally:
            self._answered = time.perf_counter()
            if finished:
                if self._state is _BUSY:  # (not if it broke on an unexpected frame)
                    self._answered_now()
            elif self._state is _BUSY and not self._channel.peer_gone:
                # Left early (or an item could not be rebuilt): the generator is closed
                # in the worker, which runs its finally blocks, and its END awaited, so
                # that the worker is idle again. A kill (cancellable) skips this.
                try:
                    with CancelScope(shield=True):
                        await self._send([_CLOSE])
                        await self._skip_to_end()
                except BrokenWorkerProcess:
                    pass
                except BaseException:
                    # Interrupted before the worker said END (a KeyboardInterrupt on
                    # Trio lands even here): it may still be in the stream, so it goes.
                    self.kill()
                    raise

    # -- ending --------------------------------------------------------------------

    def kill(self) -> None:
        """Kill the worker process now."""
        self._closing()
        if self.process.returncode is None:
            with suppress(ProcessLookupError):
                self.process.kill()

    async def aclose(self) -> None:
        """Ask the worker to exit (kill it if it does not), reap it, close the pipes."""
        if self._state is WorkerState.CLOSED:
            return
        with CancelScope(shield=True):
            graceful = self._state not in (WorkerState.CLOSING, WorkerState.BROKEN)
            self._closing()
            if graceful and self.process.returncode is None:
                self._channel.send_shutdown()
                with move_on_after(_RETIRE_GRACE):
                    await self.process.wait()
            await self._kill_and_reap()
            self._output.stop()
            await self._output.wait_closed()
            self._watch_scope.cancel()
            # A call abandoned by a pool closing under it may still wait on the pipes:
            # closing them wakes it.
            self._channel.close()
            await self.process.aclose()
            if self._state is WorkerState.CLOSING:  # (another aclose may have finished)
                self._closed()


_IDLE = WorkerState.IDLE
_BUSY = WorkerState.BUSY


class ProcessBackend(WorkerBackend):
    """Runs calls in local worker processes started through a :class:`Launcher`.

    Args:
        python: the interpreter that runs the workers (default: this one).
        serializer: how calls and results travel (default: :class:`PickleSerializer`).
        launcher: how a worker process is started (default: :class:`Launcher`).
        output: where the workers' standard output and error go (default: this
            process's ``sys.stdout`` and ``sys.stderr``, written without ever blocking
            the event loop; a worker that outprints a slow reader of them waits). A
            handler is called on the event loop's thread and must not block; what it
            raises is logged by the ``procio.workers`` logger and the call goes on.
        max_frame_length: the largest frame accepted from, or sent to, a worker (at
            least 512 bytes). A call over it fails with :exc:`SerializationError`
            before anything is sent; the worker refuses results over it the same way.
        start_timeout: seconds a worker has to complete its handshake.
        idle_poll: how a worker waits for its next call after answering one.
            ``"adaptive"`` (the default) polls for 200 µs, but only while calls come
            back to back (the call just answered and the one before it each came
            within 200 µs of the answer before them): back-to-back calls then find the
            worker awake, and a worker called now and then sleeps at once, costing no
            CPU. A number of seconds (at most 1) polls that long after every answer;
            ``0`` never polls, the choice for battery power, CPU quotas and shared
            hosts.

    Raises:
        TypeError: an argument of the wrong type.
        ValueError: a frame limit under 512 bytes, a start timeout that is not
            positive, or an *idle_poll* out of range.
    """

    def __init__(
        self,
        *,
        python: str | os.PathLike[str] | None = None,
        serializer: Serializer | None = None,
        launcher: Launcher | None = None,
        output: OutputHandler | None = None,
        max_frame_length: int = _wire.DEFAULT_MAX_FRAME_LENGTH,
        start_timeout: float = 30.0,
        idle_poll: float | Literal["adaptive"] = "adaptive",
    ) -> None:
        if serializer is not None and not isinstance(serializer, Serializer):
            raise TypeError(f"serializer must be a Serializer, not {serializer!r}")
        if launcher is not None and not isinstance(launcher, Launcher):
            raise TypeError(f"launcher must be a Launcher, not {launcher!r}")
        if output is not None and not callable(output):
            raise TypeError(f"output must be a callable taking (fd, data), not {output!r}")
        if not _is_number(max_frame_length, int):
            raise TypeError(f"max_frame_length must be an int, not {max_frame_length!r}")
        if max_frame_length < MIN_FRAME_LENGTH:
            raise ValueError(
                f"max_frame_length must be at least {MIN_FRAME_LENGTH} bytes (the "
                f"handshake messages need that much), not {max_frame_length}"
            )
        if not _is_number(start_timeout, (int, float)):
            raise TypeError(f"start_timeout must be a number of seconds, not {start_timeout!r}")
        if not start_timeout > 0:
            raise ValueError(f"start_timeout must be positive, not {start_timeout!r}")
        seconds, adaptive = _check_idle_poll(idle_poll)
        self.idle_poll: float | Literal["adaptive"] = idle_poll
        self._idle_poll_seconds = seconds
        self._idle_poll_adaptive = adaptive
        self._worker_awake = seconds * _AWAKE_SHARE
        self.python = os.fspath(python) if python is not None else sys.executable
        self.serializer = serializer if serializer is not None else PickleSerializer()
        self.launcher = launcher if launcher is not None else Launcher()
        self.output: OutputHandler = output if output is not None else _parent_streams
        # Whether the output handler takes more now (only the default one may not).
        self._output_room: Callable[[], bool] = (
            _parent_streams.room if output is None else _always_room
        )
        self.max_frame_length = max_frame_length
        self.start_timeout = start_timeout
        self._stack: AsyncExitStack | None = None
        self._task_group: TaskGroup | None = None

    async def __aenter__(self) -> ProcessBackend:
        async with AsyncExitStack() as stack:
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            self._stack = stack.pop_all()
        return self

    async def aclose(self) -> None:
        """Stop forwarding output; the pool has closed every worker by now.

        Output still waiting for this process's stdout or stderr gets a moment to be
        written, so that it comes before what the parent prints next; past that, the
        writer thread carries on with it alone.
        """
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._task_group = None
        if self.output is _parent_streams:
            with CancelScope(shield=True), move_on_after(_RETIRE_GRACE):
                # The writer thread has no way to wake an event loop: look now and then.
                while _parent_streams.pending():  # noqa: ASYNC110
                    await anyio.sleep(_OUTPUT_RETRY)

    def prepare_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        """Serialize the call into a ready-to-write CALL frame."""
        return self._encode(_wire.CALL, func, args)

    def prepare_batch(
        self, func: Callable[..., object], args_list: Sequence[tuple[Any, ...]]
    ) -> Any:
        """Serialize a chunk of calls of *func* into one BATCH frame."""
        calls = [tuple(args) for args in args_list]
        return _Batch(self, func, calls, self._encode(_wire.BATCH, func, calls))

    def prepare_stream(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        """Serialize a call of a generator function into a STREAM frame."""
        return _Stream(self._encode(_wire.STREAM, func, args))

    def _prepare_items(self, func: Callable[..., object], items: list[Any]) -> _Items | None:
        """A chunk of ``func(item)`` calls as a BATCH of items (see ``takes_items``).

        ``None`` if the serializer cannot write one: the chunk then goes as a BATCH of
        argument tuples (:meth:`prepare_batch`).
        """
        dump_items = getattr(self.serializer, "_dump_items", None)
        segments = dump_items(func, items) if dump_items is not None else None
        if segments is None:
            return None
        return _Items(self._frame(_wire.BATCH, segments))

    def _encode(self, kind: int, func: Callable[..., object], args: Any) -> list[Buffer]:
        try:
            if kind == _wire.BATCH:
                segments = self.serializer.dump_batch(func, args)
            else:
                segments = self.serializer.dump_call(func, args)
        except Exception as exc:
            raise SerializationError(
                f"cannot send {getattr(func, '__qualname__', func)!r} to a worker: {exc}"
            ) from exc
        return self._frame(kind, segments)

    def _frame(self, kind: int, segments: Sequence[Buffer]) -> list[Buffer]:
        # Measured before anything is sent, small calls included: the worker treats a
        # frame over its limit as a broken protocol and exits.
        size = sum(memoryview(segment).nbytes for segment in segments)
        if size > self.max_frame_length:
            raise SerializationError(
                f"the call takes {size} bytes, more than the frame limit of "
                f"{self.max_frame_length} bytes (max_frame_length)"
            )
        try:
            return _wire.encode_frame(kind, segments)
        except _wire.ProtocolError as exc:  # too many out-of-band buffers
            raise SerializationError(f"the call cannot be sent to a worker: {exc}") from exc

    def _init_message(self, *, main_ahead: bool) -> _wire.Init:
        return {
            "protocol": _wire.PROTOCOL_VERSION,
            # Relative entries (and "" for the current directory) are the parent's:
            # a worker may start elsewhere (cwd=...).
            "sys_path": [os.path.abspath(entry) for entry in sys.path],
            "main": main_module_spec(),
            "main_ahead": main_ahead,
            "codec": self.serializer.worker_codec,
            "max_frame_length": self.max_frame_length,
            "idle_poll": {"seconds": self._idle_poll_seconds, "adaptive": self._idle_poll_adaptive},
        }

    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        """Start a worker process, complete its handshake and return it.

        It runs the parent's ``__main__`` module only once a call needs one of its
        names: a call of anything else does not wait for that module's imports.
        """
        return await self._start_worker(options, main_ahead=False)

    async def prestart_worker(self) -> Worker:
        """Start a worker ahead of need: it runs the parent's ``__main__`` module at once.

        It does so after its handshake, so this returns as soon as :meth:`start_worker`
        would; a call sent meanwhile is served once the module has run. An exception
        the module raises is kept by the worker, and fails the first call that needs
        the module, as it would have had the module run then.
        """
        return await self._start_worker({}, main_ahead=True)

    async def _start_worker(self, options: Mapping[str, Any], *, main_ahead: bool) -> Worker:
        if self._task_group is None:
            raise RuntimeError("the backend is not open; use it as an async context manager")
        if not POSIX:
            raise NotImplementedError(
                "procio's worker processes talk over inherited POSIX pipes, which Windows "
                "does not have; there, use anyio.to_process.run_sync, or give WorkerPool "
                "a backend of its own"
            )
        _refuse_while_running_parent_main()
        popen_kwargs = dict(options)
        for reserved in ("stdin", "stdout", "stderr"):
            if reserved in popen_kwargs:
                raise TypeError(
                    f"{reserved}= cannot be given for a worker: its standard streams are "
                    "set up by procio (see the worker protocol page of procio's documentation)"
                )
        env = popen_kwargs.pop("env", None)
        passed = set(popen_kwargs.pop("pass_fds", ()))
        if not popen_kwargs.pop("close_fds", True):
            # What close_fds=False hands over, every inheritable descriptor, is listed
            # and passed explicitly: Popen ignores close_fds=False beside pass_fds, and
            # making the protocol pipes inheritable instead would let any other child
            # started meanwhile (another worker, say) inherit them too.
            passed.update(_inheritable_fds())
        with ExitStack() as parent_ends, ExitStack() as child_ends:
            # Each end is closed on any failure, however far the start got.
            request_read, request_write = _pipe(child_ends, parent_ends)
            response_read, response_write = _pipe(parent_ends, child_ends)
            stdout_read, stdout_write = _pipe(parent_ends, child_ends)
            stderr_read, stderr_write = _pipe(parent_ends, child_ends)
            _grow_pipe(request_write)
            _grow_pipe(response_write)
            argv = [
                self.python,
                "-c",
                BOOTSTRAP,
                WORKER_PROGRAM,
                str(request_read),
                str(response_write),
            ]
            process = await self.launcher.launch(
                argv,
                pass_fds=(request_read, response_write, *sorted(passed)),
                stdout=stdout_write,
                stderr=stderr_write,
                env=env,
                popen_kwargs=popen_kwargs,
            )
            parent_ends.pop_all()
        worker = ProcessWorker(
            self, process, request_write, response_read, {1: stdout_read, 2: stderr_read}
        )
        self._task_group.start_soon(interrupts_go_to_main_task(worker.forward_output))
        init = self._init_message(main_ahead=main_ahead)
        try:
            with anyio.fail_after(self.start_timeout):
                await worker.handshake(init)
        except BaseException as exc:
            worker.kill()
            await worker.aclose()
            if isinstance(exc, TimeoutError):
                raise BrokenWorkerProcess(
                    f"no handshake within {self.start_timeout} s",
                    pid=worker.pid,
                    returncode=process.returncode,
                    stderr_tail=worker.stderr_tail(),
                ) from None
            raise
        return worker


def _check_idle_poll(idle_poll: object) -> tuple[float, bool]:
    """Check an *idle_poll* setting; return (seconds of polling, adaptive)."""
    if idle_poll == "adaptive" and isinstance(idle_poll, str):
        return _IDLE_POLL_SECONDS, True
    if not _is_number(idle_poll, (int, float)):
        raise TypeError(f'idle_poll must be "adaptive" or a number of seconds, not {idle_poll!r}')
    seconds = float(idle_poll)  # type: ignore[arg-type]
    if not 0 <= seconds <= 1:  # also refuses NaN
        raise ValueError(f"idle_poll must be between 0 and 1 second, not {idle_poll!r}")
    return seconds, False


def _refuse_while_running_parent_main() -> None:
    """Stop a worker that runs its parent's main module from starting workers of its own.

    That happens when the main module starts workers as it is imported, with no
    ``if __name__ == "__main__":`` guard: every worker would start another, without end.
    """
    worker = sys.modules.get(WORKER_MODULE)
    if worker is not None and getattr(worker, "RUNNING_PARENT_MAIN", False):
        raise RuntimeError(
            "a worker process was asked to start worker processes while it ran the parent's "
            "main module: the main module starts them when imported. Put that code under "
            '`if __name__ == "__main__":`, which a worker does not run.'
        )
