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
from contextlib import suppress
from typing import Any

_logger = logging.getLogger("procio.workers")

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
