"""One subinterpreter worker: its host thread, its wake-up socket and its call cycle.

The host thread is a dedicated OS thread of the parent. It creates the interpreter,
then enters it for good: the guest loop (``_guest``) runs there, blocked in
``os.read`` between calls, so a call costs no thread hand-off in the parent, only a
one-byte wake-up each way. When the loop ends (the parent shut its socket end, or a
killed call returned), the same thread destroys the interpreter and closes the
guest's socket end; the parent sees that as end of input.

The thread is not a daemon: an interpreter cannot be stopped mid-call, and Python
must not finalize while one still runs. At exit, every idle worker is told to stop
before Python waits for the threads, so only a call still running can delay the end.
"""

from __future__ import annotations

import enum
import logging
import os
import socket
import sys
import threading
import time
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import Any, final

import anyio
from anyio import CapacityLimiter, to_thread
from anyio.lowlevel import RunVar, cancel_shielded_checkpoint, checkpoint
from procio_workers import BrokenWorkerProcess, RemoteTraceback, SerializationError, WorkerError
from procio_workers.abc import Worker

from . import _guest, _runtime

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover - before Python 3.12
    from typing_extensions import override

logger = logging.getLogger("procio.interpreters")

_GUEST_PATH = os.path.abspath(_guest.__file__)
#: The name the guest module has inside an interpreter.
_GUEST_MODULE = "_procio_interpreters_guest"

# The script each interpreter runs for its whole life: load the guest by file path
# (not through the package, whose __init__ imports anyio) and serve.
_BOOTSTRAP = """\
import importlib.util as _u, sys as _s
_spec = _u.spec_from_file_location("_procio_interpreters_guest", _procio_guest_path)
_g = _u.module_from_spec(_spec)
_s.modules[_spec.name] = _g
_spec.loader.exec_module(_g)
del _u, _s, _spec
_g.serve(_procio_fd, _procio_identity, _procio_queue, _procio_path, _procio_main, _procio_poll)
"""

#: How long an interpreter polls for its next call after an answer, by default. It is
#: taken to be still polling for the first three quarters of that window; a call sent
#: then is answered within microseconds if it is short, so the caller polls for the
#: reply for up to _REPLY_POLL before it waits through the event loop.
IDLE_POLL_SECONDS = 200e-6
_AWAKE_SHARE = 0.75
_REPLY_POLL = 50e-6

# Sockets of workers whose host thread still runs, shut down at exit (see below).
_live: weakref.WeakSet[_Host] = weakref.WeakSet()


def _stop_idle_workers_at_exit() -> None:
    for host in list(_live):
        host.shutdown()


# threading's own exit hook runs before Python waits for non-daemon threads, which is
# when an idle guest must be told to stop; atexit would run too late.
_register = getattr(threading, "_register_atexit", None)
if _register is not None:
    _register(_stop_idle_workers_at_exit)


class _Host:
    """The parent's end of the wake-up socket and the thread that hosts the interpreter."""

    def __init__(
        self,
        path: tuple[str, ...],
        main: tuple[str, str] | None,
        idle_poll: tuple[float, bool] = (0.0, False),
    ) -> None:
        self.idle_poll = idle_poll
        self.parent, guest = socket.socketpair()
        try:
            self.parent.setblocking(False)  # noqa: FBT003 - the socket API
            self.queue = _runtime.queue_create()
        except BaseException:
            self.parent.close()
            guest.close()
            raise
        self.failure: str | None = None
        self.interpreter_id: int | None = None
        self.pid = os.getpid()
        self.finished = threading.Event()
        self._shut = False
        # Whoever finishes last of the worker and the host thread closes the parent's
        # socket end, so the guest never writes to a closed peer.
        self._lock = threading.Lock()
        self._released = False
        self.thread = threading.Thread(
            target=_host_main,
            args=(self, guest, path, main),
            name="procio-interpreter",
            daemon=False,
        )
        _live.add(self)
        try:
            self.thread.start()
        except BaseException:
            _live.discard(self)
            self.parent.close()
            guest.close()
            _runtime.queue_destroy(self.queue)
            raise

    def shutdown(self) -> None:
        """Tell the guest to stop after its current call (idempotent, never blocks)."""
        # A forked child shares the socket with its parent: shutting it there would stop
        # the parent's guest.
        if not self._shut and os.getpid() == self.pid:
            self._shut = True
            # Write side only: the guest reads end of input and stops, and a reply it is
            # still writing lands in our buffer rather than on a closed peer.
            with suppress(OSError):
                self.parent.shutdown(socket.SHUT_WR)

    def release(self) -> None:
        """The worker is done with the parent's end: close it now or when the thread ends."""
        with self._lock:
            self._released = True
            if not self.finished.is_set():
                return
        self.parent.close()

    def ended(self) -> None:
        """Called by the host thread as its last act."""
        with self._lock:
            self.finished.set()
            if not self._released:
                return
        self.parent.close()


def _host_main(
    host: _Host, guest: socket.socket, path: tuple[str, ...], main: tuple[str, str] | None
) -> None:
    interp: Any = None
    identity = _guest.file_identity(guest.fileno())
    try:
        interp = _runtime.create()
        host.interpreter_id = _interpreter_id(interp)
        _runtime.bind(
            interp,
            {
                "_procio_guest_path": _GUEST_PATH,
                "_procio_fd": guest.fileno(),
                "_procio_identity": identity,
                "_procio_queue": host.queue,
                "_procio_path": path,
                "_procio_main": main,
                "_procio_poll": host.idle_poll,
            },
        )
        host.failure = _runtime.run(interp, _BOOTSTRAP)
    except BaseException as exc:  # reported to the parent as a broken worker
        host.failure = f"{type(exc).__name__}: {exc}"
    finally:
        # Each step on its own: the parent waits for ended(), whatever failed before it.
        if interp is not None:
            try:
                _runtime.destroy(interp)
            except Exception:
                logger.exception("could not destroy subinterpreter %s", host.interpreter_id)
        try:
            _runtime.queue_destroy(host.queue)
        except Exception:
            logger.exception(
                "could not destroy the queue of subinterpreter %s", host.interpreter_id
            )
        if _guest.same_file(guest.fileno(), identity):
            guest.close()
        else:
            # A function closed the guest's descriptor behind its back: its number may
            # belong to another file by now, which must stay open.
            guest.detach()
        _live.discard(host)
        host.ended()
    if host.failure is not None:
        logger.debug("subinterpreter %s ended: %s", host.interpreter_id, host.failure)


def _interpreter_id(interp: Any) -> int:
    return int(getattr(interp, "id", interp))


async def _receive(sock: socket.socket, poll: float = 0.0) -> bytes:
    """Wait for one wake-up byte from the guest; ``b""`` once its end is closed.

    A short call has often answered by the time the caller looks (the guest runs on
    another core), or does within *poll* seconds, for which the caller keeps looking:
    the byte is then taken without registering with the event loop, and a checkpoint
    keeps the call a schedule point all the same.
    """
    deadline = 0.0
    while True:
        try:
            return await _received(sock.recv(1))
        except BlockingIOError:
            pass
        except OSError:
            return await _received(b"")
        if not poll:
            break
        now = time.perf_counter()
        if not deadline:
            deadline = now + poll
        elif now > deadline:
            break
    while True:
        await anyio.wait_readable(sock)
        try:
            return sock.recv(1)
        except BlockingIOError:
            continue
        except OSError:
            return b""


async def _received(data: bytes) -> bytes:
    await cancel_shielded_checkpoint()
    return data


class _State(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    BUSY = "busy"
    #: Killed while a call ran: the call's result is abandoned.
    ABANDONED = "abandoned"
    CLOSED = "closed"
    BROKEN = "broken"


@final
class InterpreterWorker(Worker):
    """A subinterpreter of this process that runs one call at a time.

    Handed out by :class:`~procio_interpreters.InterpreterBackend`; not constructed
    directly.
    """

    def __init__(self, host: _Host) -> None:
        self._host = host
        self._state = _State.STARTING
        # The request of the running call, kept alive until the guest is done with it:
        # shared buffers point into its memory.
        self._request: object = None
        self._closer: Callable[[], None] = weakref.finalize(self, _abandon, host)
        # Whether the guest polls after its next answer, as it decides it (see
        # _guest._Guest.serve), and when it last answered.
        self._spinning = host.idle_poll[0] > 0
        self._quick = True  # whether the last call came within the window of the answer
        self._answered = 0.0

    @property
    def interpreter_id(self) -> int | None:
        """The subinterpreter's id, once it exists."""
        return self._host.interpreter_id

    @property
    @override
    def alive(self) -> bool:
        return self._state is _State.IDLE and not self._host.finished.is_set()

    async def _started(self) -> None:
        wake = await _receive(self._host.parent)
        if wake != _guest.WAKE_READY:
            self._state = _State.BROKEN
            await self._finish()
            raise BrokenWorkerProcess(
                f"the subinterpreter could not start: {self._host.failure or 'it ended at once'}"
            )
        self._state = _State.IDLE
        self._answered = time.perf_counter()

    @override
    async def call(self, request: Any) -> object:
        if self._state is not _State.IDLE:
            raise BrokenWorkerProcess(
                f"the subinterpreter worker is {self._state.value}", started=False
            )
        host = self._host
        self._state = _State.BUSY
        self._request = request
        try:
            _runtime.put(host.queue, request)
            host.parent.send(_guest.WAKE_CALL)
        except OSError as exc:
            self._state = _State.BROKEN
            self._request = None
            raise BrokenWorkerProcess(
                f"the subinterpreter has ended: {host.failure or exc}", started=False
            ) from None
        # A guest that answered moments ago is still polling for this call: a short
        # call's reply comes within microseconds, and polling for it costs less than a
        # trip through the event loop. A guest asleep takes longer to wake than that.
        spin, adaptive = host.idle_poll
        gap = time.perf_counter() - self._answered
        awake = self._spinning and gap < spin * _AWAKE_SHARE
        if adaptive:
            quick = gap < spin
            self._spinning = quick and self._quick
            self._quick = quick
        try:
            wake = await _receive(host.parent, _REPLY_POLL if awake else 0.0)
        except BaseException:
            # Cancelled (cancellable=True): the guest still runs the call; its result
            # is abandoned and the interpreter ends once the call returns.
            self._abandon()
            raise
        self._request = None
        if wake != _guest.WAKE_REPLY:
            self._state = _State.BROKEN
            raise BrokenWorkerProcess(
                f"the subinterpreter ended during the call: {host.failure or 'no reply'}"
            )
        reply: Any = _runtime.get(host.queue)
        self._state = _State.IDLE
        self._answered = time.perf_counter()
        return _unpack_reply(reply)

    def _abandon(self) -> None:
        if self._state is _State.BUSY:
            self._state = _State.ABANDONED
        elif self._state is not _State.ABANDONED:
            self._state = _State.CLOSED
        self._host.shutdown()

    @override
    def kill(self) -> None:
        """Stop the worker at once, abandoning its call.

        A subinterpreter cannot be interrupted: a running call runs to its end, its
        result is dropped, and the interpreter is destroyed as soon as it returns.
        """
        self._abandon()

    @override
    async def aclose(self) -> None:
        """Stop the guest and wait until its interpreter is destroyed.

        A worker whose call was abandoned is not waited for: its interpreter ends on
        its own once the call returns.
        """
        abandoned = self._state is _State.ABANDONED
        self._abandon()
        if abandoned:
            self._closer()
            await checkpoint()
            return
        await self._finish()

    async def _finish(self) -> None:
        host = self._host
        host.shutdown()
        if not host.finished.is_set():
            await to_thread.run_sync(host.finished.wait, limiter=_closers())
        if host.thread.is_alive():
            await to_thread.run_sync(host.thread.join, limiter=_closers())
        self._closer()


def _abandon(host: _Host) -> None:
    # The worker is closed, or dropped without aclose(): its guest stops after the
    # current call, and the parent's socket end closes once the host thread ends.
    host.shutdown()
    host.release()


# The threads that wait for host threads to end, apart from the default thread limiter
# (which the caller's own work may have used up).
_closer_limiter: RunVar[CapacityLimiter] = RunVar("procio_interpreters_closers")


def _closers() -> CapacityLimiter:
    try:
        return _closer_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(64)
        _closer_limiter.set(limiter)
        return limiter


def _unpack_reply(reply: tuple[int, Any]) -> object:
    kind, payload = reply
    if kind == _guest.RESULT_SHARED:
        return payload
    import pickle

    if kind == _guest.RESULT_PICKLED:
        try:
            return pickle.loads(payload)
        except Exception as exc:
            raise SerializationError(f"the result could not be rebuilt here: {exc!r}") from exc
    if kind == _guest.RAISED:
        data, name, message, text, ordinary = payload
        error: object = None
        if data is not None:
            try:
                error = pickle.loads(data)
            except Exception:
                # Its class cannot be rebuilt here: the names and the text stand for it.
                error = None
        if not ordinary or not isinstance(error, Exception):
            raise WorkerError(
                name, message, text, error if isinstance(error, BaseException) else None
            )
        raise error from RemoteTraceback(text)
    name, message, text = payload
    if kind == _guest.RESULT_UNSENDABLE:
        raise SerializationError(
            f"the result could not be sent back from the subinterpreter: {name}: {message}"
        ) from RemoteTraceback(text)
    raise SerializationError(
        f"the call could not be rebuilt in the subinterpreter: {name}: {message}"
    ) from RemoteTraceback(text)
