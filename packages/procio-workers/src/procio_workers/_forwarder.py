"""Worker output on its way to this process's own standard output and error.

The output a worker writes to its fd 1 and 2 comes up two pipes of its own, apart from
the protocol; by default it goes on to ``sys.stdout`` and ``sys.stderr`` through
:data:`_parent_streams`, which never blocks the event loop.
"""

from __future__ import annotations

import logging
import os
import select
import stat
import sys
import threading
import weakref
from collections import deque
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

import anyio
from anyio import BrokenResourceError, CancelScope, ClosedResourceError
from procio_process._fdstream import FdHolder

from ._hosting import interrupts_go_to_main_task

_logger = logging.getLogger("procio.workers")

_STDERR_TAIL_BYTES = 16 * 1024
_STDERR_TAIL_LINES = 20
_READ_CHUNK = 64 * 1024

#: Most bytes of worker output waiting to be written to this process's stdout and
#: stderr; past it, workers' output pipes are left unread until there is room again.
_OUTPUT_BUFFER = 1 << 20
# While that buffer is full, how often a forwarder looks for room again.
_OUTPUT_RETRY = 0.01


def _write_through(stream: Any, data: bytes) -> None:
    binary = getattr(stream, "buffer", None)
    if binary is not None:
        stream.flush()  # what the parent itself printed goes first
        binary.write(data)
        binary.flush()
    else:
        stream.write(data.decode("utf-8", "replace"))
        stream.flush()


def _cannot_block(stream: Any, size: int) -> bool:
    """Whether writing *size* bytes to *stream* now would return without waiting."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True  # in memory (a test's capture, a StringIO): never waits
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            return True
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        ready = poller.poll(0)
    except (OSError, ValueError):
        return True  # closed or unusable: writing fails at once, and is reported
    if ready and ready[0][1] & (select.POLLERR | select.POLLHUP | select.POLLNVAL):
        return True  # writing fails at once
    # A pipe (or terminal) that polls writable takes at least PIPE_BUF bytes at once.
    return bool(ready) and size <= _PIPE_BUF


_PIPE_BUF: int = getattr(select, "PIPE_BUF", 512)


class _ParentStreams:
    """Forwards worker output to this process's ``sys.stdout`` / ``sys.stderr``.

    Never blocks the event loop: output is written at once only when that cannot wait
    (a stream with room, a file, an in-memory stream), which keeps it in order with
    what the parent prints; otherwise it goes to a writer thread of its own (not AnyIO's
    thread pool) through a buffer of at most ``_OUTPUT_BUFFER`` bytes. When that is
    full, the forwarders stop reading the workers' output pipes, so a worker that keeps
    printing waits, as ``print()`` in the parent would, while every task goes on.
    A stream that fails (closed, a full disk) is reported once, in a warning of the
    ``procio.workers`` logger, and its output is dropped.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._queue: deque[tuple[Any, bytes]] = deque()
        self._queued = 0
        self._writing = False
        self._thread: threading.Thread | None = None
        self._failed: weakref.WeakSet[Any] = weakref.WeakSet()

    def __call__(self, which: int, data: bytes) -> None:
        self.write(which, data)

    def room(self) -> bool:
        """Whether the buffer takes more output now."""
        return self._queued < _OUTPUT_BUFFER

    def pending(self) -> bool:
        """Whether some output still waits to be written."""
        return bool(self._queue) or self._writing

    def write(self, which: int, data: bytes) -> None:
        """Write *data* to ``sys.stdout`` (*which* is 1) or ``sys.stderr``, or queue it."""
        stream = sys.stdout if which == 1 else sys.stderr
        if stream is None:
            return
        with self._lock:
            queue = self._writing or bool(self._queue) or not _cannot_block(stream, len(data))
            if queue:
                self._queue.append((stream, data))
                self._queued += len(data)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run, name="procio worker output", daemon=True
                    )
                    self._thread.start()
                self._ready.notify()
        if not queue:
            self._write(stream, data)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._writing = False
                while not self._queue:
                    self._ready.wait()
                stream, data = self._queue.popleft()
                self._writing = True
            try:
                self._write(stream, data)
            finally:
                with self._lock:
                    self._queued -= len(data)

    def _write(self, stream: Any, data: bytes) -> None:
        try:
            _write_through(stream, data)
        except Exception:
            if stream not in self._failed:
                with suppress(TypeError):  # a stream that takes no weak reference
                    self._failed.add(stream)
                _logger.warning(
                    "could not write a worker's output to %r; it is dropped", stream, exc_info=True
                )


_parent_streams = _ParentStreams()


def _always_room() -> bool:
    return True


class OutputForwarder:
    """Reads a worker's stdout and stderr pipes and hands what comes to a handler.

    It owns the parent's read ends (as :class:`FdHolder` objects, closed by :meth:`run`
    when it ends, or by their finalizer if it never ran) and keeps the last bytes of
    stderr for error reports. :meth:`run` forwards until both pipes reach end of file
    or :meth:`stop` is called: a grandchild that inherited the pipes can hold them open
    after the worker is gone, and must not hold up the worker's closing.

    Args:
        fds: the read ends, by the worker's descriptor they carry (``1`` or ``2``).
        handler: called with ``1`` or ``2`` and the bytes read; what it raises is logged.
        room: whether the handler takes more now; while it does not, the output waits
            in its pipe (and a worker that keeps writing waits too).
        pid: the worker's pid, for log messages.
    """

    __slots__ = (
        "_done",
        "_handler",
        "_holders",
        "_pid",
        "_poll",
        "_room",
        "_scope",
        "_tail",
        "_which",
    )

    def __init__(
        self,
        fds: Mapping[int, int],
        handler: Callable[[int, bytes], None],
        room: Callable[[], bool] = _always_room,
        *,
        pid: int | None = None,
    ) -> None:
        self._holders: dict[int, FdHolder] = {}
        for which, fd in fds.items():
            self._holders[which] = FdHolder(fd)
        self._handler = handler
        self._room = room
        self._pid = pid
        self._tail = bytearray()
        self._done = anyio.Event()
        self._scope = CancelScope()
        self._which = {fd: which for which, fd in fds.items()}
        self._poll: select.poll | None = None
        if hasattr(select, "poll"):
            self._poll = select.poll()
            for fd in fds.values():
                self._poll.register(fd, select.POLLIN)

    @property
    def fds(self) -> dict[int, int]:
        """The read ends still open, by the worker's descriptor they carry."""
        return {which: holder.fd for which, holder in self._holders.items() if not holder.closed}

    def stderr_tail(self) -> list[str]:
        """Return the last lines read from the worker's standard error."""
        text = bytes(self._tail).decode("utf-8", "replace")
        return text.splitlines()[-_STDERR_TAIL_LINES:]

    async def run(self) -> None:
        """Forward both pipes until they close or :meth:`stop`; then close the read ends."""
        try:
            with self._scope:
                async with anyio.create_task_group() as tg:
                    for which in self._holders:
                        tg.start_soon(interrupts_go_to_main_task(self._forward), which)
        finally:
            self._poll = None
            for which, holder in self._holders.items():
                # What is left in the pipe goes out before its end is closed.
                self._pump(which, force=True)
                holder.close()
            self._done.set()

    def stop(self) -> None:
        """Stop forwarding (what is waiting in the pipes still goes out first)."""
        self._scope.cancel()

    async def wait_closed(self) -> None:
        """Wait until :meth:`run` has ended and closed the pipes."""
        await self._done.wait()

    def forward_pending(self) -> None:
        """Forward what is already waiting in the pipes, without waiting for more.

        One system call when there is nothing: the output a call wrote is in the pipes
        by the time its answer is read, and goes out before the answer is returned.
        """
        poll = self._poll
        if poll is not None:
            for fd, _ in poll.poll(0):
                if self._room():
                    self._pump(self._which[fd])

    async def _forward(self, which: int) -> None:
        holder = self._holders[which]
        room = self._room
        while True:
            if not room():
                # The parent's own stdout is slow: leave the worker's output in its
                # pipe (the worker waits once that is full) and look again shortly.
                await anyio.sleep(_OUTPUT_RETRY)
                continue
            await holder.wait_readable()
            if not self._pump(which):
                return

    def _pump(self, which: int, *, force: bool = False) -> bool:
        """Forward what is waiting on one output pipe; ``False`` once it reached EOF.

        It stops early while the handler has no room (unless *forced*, for the last
        read before the pipe is closed): the rest waits in the pipe.
        """
        holder = self._holders.get(which)
        if holder is None:
            return False
        while True:
            try:
                data = holder.read(_READ_CHUNK)
            except (ClosedResourceError, BrokenResourceError):
                return False
            if data is None:
                return True
            if not data:
                return False
            if which == 2:
                self._tail += data
                del self._tail[:-_STDERR_TAIL_BYTES]
            try:
                self._handler(which, data)
            except Exception:
                _logger.exception(
                    "the output handler %r raised on %d bytes from worker %s's fd %d; "
                    "they are dropped",
                    self._handler,
                    len(data),
                    self._pid,
                    which,
                )
            if len(data) < _READ_CHUNK or not (force or self._room()):
                return True
