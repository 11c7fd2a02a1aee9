"""One owner for a non-blocking file descriptor: every pipe user in procio goes through it.

:class:`FdHolder` owns one fd, set non-blocking. Its ``fd`` is ``-1`` once closed, and
it is closed once, however many times and from wherever :meth:`FdHolder.close` is
called. Tasks that wait for the fd through :meth:`FdHolder.wait_readable` or
:meth:`FdHolder.wait_writable` are woken by a close (with
:exc:`anyio.ClosedResourceError`), as AnyIO's ``notify_closing`` contract asks; and a
driver that watches the fd some other way (run_process's private epoll set) can ask,
through :attr:`FdHolder.on_close`, to be told before the fd goes away.

The system calls never block: :meth:`~FdHolder.read`, :meth:`~FdHolder.readinto`,
:meth:`~FdHolder.write` and :meth:`~FdHolder.writev` return ``None`` when the call
would block, and map every other failure in one place:

* the fd is closed (``-1``, or ``EBADF``): :exc:`anyio.ClosedResourceError`;
* any other :exc:`OSError` (``EPIPE``, ``ECONNRESET``, ``EIO``...):
  :exc:`anyio.BrokenResourceError`, chained to the original error.

:func:`set_pipe_size` sizes a pipe where the system allows it (Linux).

This module is private but stable: procio's own streams and ``run_process`` are built
on it, and procio-workers may build its private pipes on it too.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from typing import NoReturn

from anyio import BrokenResourceError, ClosedResourceError, notify_closing
from anyio import wait_readable as _wait_readable
from anyio import wait_writable as _wait_writable

#: The most bytes a read or write loop moves through a pipe, in calls that need no wait,
#: before the event loop's other tasks get a turn. A peer that keeps pace keeps a pipe
#: from ever filling (or running dry), and a large transfer would otherwise hold the
#: loop for as long as its bytes take to copy: tens of milliseconds for some tens of
#: megabytes. A turn costs some microseconds, against about a millisecond to copy this
#: many bytes.
TURN_BYTES = 4 << 20

Buffer = bytes | bytearray | memoryview

if sys.platform != "win32":
    import fcntl

    # Linux only; Popen's own pipesize= uses the same call.
    _F_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)
else:  # pragma: no cover - Windows
    _F_SETPIPE_SZ = None


def set_pipe_size(fd: int, size: int) -> bool:
    """Ask for a pipe of *size* bytes on either end *fd*; return whether it was granted.

    Only Linux can resize a pipe. Refusals are expected and harmless: beyond
    ``/proc/sys/fs/pipe-max-size`` for an unprivileged process, or past the user's
    quota of pipe memory; the pipe then keeps its size.
    """
    if _F_SETPIPE_SZ is None:
        return False
    try:
        fcntl.fcntl(fd, _F_SETPIPE_SZ, size)
    except OSError:
        return False
    return True


def _raise_mapped(exc: OSError) -> NoReturn:
    if exc.errno == errno.EBADF:
        raise ClosedResourceError from exc
    raise BrokenResourceError from exc


class FdHolder:
    """Owns a non-blocking file descriptor until :meth:`close`; ``fd`` is ``-1`` after.

    Args:
        fd: the descriptor to own; it is set non-blocking.
    """

    __slots__ = ("__weakref__", "_waiters", "fd", "on_close")

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self.fd = fd
        #: Called with the fd just before it is closed, by whoever watches the fd
        #: outside this holder, so that it lets go of it first. Set it back to ``None``
        #: when done watching.
        self.on_close: Callable[[int], None] | None = None
        self._waiters = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} fd={self.fd}>"

    def __del__(self) -> None:
        # Dropped without close(): nobody can be waiting on it any more (a waiting task
        # would hold a reference), so close the fd without notifying anyone.
        fd = getattr(self, "fd", -1)
        if fd >= 0:
            self.fd = -1
            with suppress(OSError):
                os.close(fd)

    @property
    def closed(self) -> bool:
        """Whether the fd has been closed."""
        return self.fd < 0

    def close(self) -> None:
        """Close the fd, once; wake the tasks waiting on it with ClosedResourceError."""
        fd = self.fd
        if fd < 0:
            return
        self.fd = -1
        on_close, self.on_close = self.on_close, None
        try:
            if on_close is not None:
                on_close(fd)
        finally:
            # notify_closing() costs a few microseconds, so only when a task is actually
            # waiting; it needs a running event loop, without which (a close from
            # synchronous code) nobody can be waiting anyway.
            if self._waiters:
                with suppress(RuntimeError):
                    notify_closing(fd)
            os.close(fd)

    # -- non-blocking system calls ---------------------------------------------------

    def read(self, max_bytes: int) -> bytes | None:
        """Read up to *max_bytes*; ``b""`` at end of file, ``None`` if it would block."""
        if self.fd < 0:
            raise ClosedResourceError
        try:
            return os.read(self.fd, max_bytes)
        except BlockingIOError:
            return None
        except OSError as exc:
            _raise_mapped(exc)

    def readinto(self, buffer: bytearray | memoryview) -> int | None:
        """Read into *buffer*; ``0`` at end of file, ``None`` if it would block."""
        if self.fd < 0:
            raise ClosedResourceError
        try:
            return os.readv(self.fd, [buffer])
        except BlockingIOError:
            return None
        except OSError as exc:
            _raise_mapped(exc)

    def write(self, data: Buffer) -> int | None:
        """Write what the pipe takes of *data*; return how much, ``None`` if it would block."""
        if self.fd < 0:
            raise ClosedResourceError
        try:
            return os.write(self.fd, data)
        except BlockingIOError:
            return None
        except OSError as exc:
            _raise_mapped(exc)

    def writev(self, buffers: Sequence[Buffer]) -> int | None:
        """Write what the pipe takes of *buffers*, in order; as :meth:`write`."""
        if self.fd < 0:
            raise ClosedResourceError
        try:
            return os.writev(self.fd, buffers)
        except BlockingIOError:
            return None
        except OSError as exc:
            _raise_mapped(exc)

    # -- waiting ---------------------------------------------------------------------

    async def wait_readable(self) -> None:
        """Wait until the fd is readable; ClosedResourceError if it is or gets closed."""
        await self._wait(_wait_readable)

    async def wait_writable(self) -> None:
        """Wait until the fd is writable; ClosedResourceError if it is or gets closed."""
        await self._wait(_wait_writable)

    async def _wait(self, ready: Callable[[int], Awaitable[None]]) -> None:
        if self.fd < 0:
            raise ClosedResourceError
        self._waiters += 1
        try:
            await ready(self.fd)
        finally:
            self._waiters -= 1
