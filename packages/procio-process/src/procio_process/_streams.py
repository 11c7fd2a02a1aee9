"""Byte streams over the parent's non-blocking ends of a child's pipes.

Each operation tries the system call first and only waits for readiness, through AnyIO's
``wait_readable``/``wait_writable``, when the pipe would block. The same code therefore
runs on asyncio, uvloop and Trio, with no transport, protocol or thread in between.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextlib import suppress

from anyio import (
    BrokenResourceError,
    ClosedResourceError,
    EndOfStream,
    notify_closing,
    wait_readable,
    wait_writable,
)
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

#: The default ``max_bytes`` of :meth:`PipeReceiveStream.receive`, as in AnyIO.
DEFAULT_MAX_BYTES = 65536
#: Every receive() and send() checks for cancellation; one that does not have to wait
#: for the pipe also yields to the event loop once in this many calls. A full yield is
#: a trip through the event loop, as costly as the read itself for a fast child, and a
#: task that reads without pause still lets the others run every few hundred
#: microseconds. A call that waits for the pipe has yielded anyway.
YIELD_EVERY = 16


def _close_fd(fd: int, *, waited_on: bool) -> None:
    # notify_closing() wakes a task blocked in wait_readable()/wait_writable() on this fd
    # with ClosedResourceError. It costs a few microseconds, so it is only called when a
    # task is actually waiting; and it needs a running event loop, without which (a
    # close from synchronous code) nobody can be waiting anyway.
    if waited_on:
        with suppress(RuntimeError):
            notify_closing(fd)
    os.close(fd)


class _PipeEnd:
    """What both ends share: the non-blocking fd they own, and closing it."""

    def __init__(self, fd: int) -> None:
        os.set_blocking(fd, False)
        self._fd = fd
        self._closed = False
        self._waiters = 0
        self._calls_since_yield = 0
        # Called with the fd just before it is closed, by whoever drives this fd
        # outside the stream (run_process's poller), so that it lets go of the fd first.
        self._on_close: Callable[[int], None] | None = None

    def fileno(self) -> int:
        """Return the file descriptor, which stays owned by this stream."""
        return self._fd

    def __del__(self) -> None:
        # A stream dropped without being closed: nobody can be waiting on it any more
        # (a waiting task would hold a reference), so close the fd without notifying.
        if not getattr(self, "_closed", True):
            self._closed = True
            with suppress(OSError):
                os.close(self._fd)

    def close(self) -> None:
        """Close the pipe at once; a task waiting on it is woken."""
        if not self._closed:
            self._closed = True
            on_close, self._on_close = self._on_close, None
            if on_close is not None:
                on_close(self._fd)
            _close_fd(self._fd, waited_on=self._waiters > 0)

    def _checkpoint(self) -> Awaitable[None]:
        """What each call awaits first: a cancellation check, sometimes a full yield.

        The full yield to the event loop comes once in :data:`YIELD_EVERY` calls. This
        hands back the awaitable rather than awaiting it, which saves a coroutine
        frame on every receive() and send().
        """
        if self._calls_since_yield >= YIELD_EVERY:
            self._calls_since_yield = 0
            return checkpoint()
        self._calls_since_yield += 1
        return checkpoint_if_cancelled()

    async def _wait(self, ready: Callable[[int], Awaitable[None]]) -> None:
        """Wait until *ready* says the fd is ready, as a waiter close() must wake."""
        self._waiters += 1
        try:
            await ready(self._fd)
        finally:
            self._waiters -= 1
        self._calls_since_yield = 0  # waiting yielded to the event loop

    async def aclose(self) -> None:
        """Close the pipe; a task waiting on it is woken."""
        self.close()
        await checkpoint()


class PipeReceiveStream(_PipeEnd, ByteReceiveStream):
    """The read end of a pipe, as an AnyIO byte receive stream."""

    @property
    def closed(self) -> bool:
        """Whether this stream has been closed."""
        return self._closed

    async def receive(self, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """Return up to *max_bytes* bytes, waiting until at least one is available.

        Raises:
            ValueError: if *max_bytes* is less than 1.
            EndOfStream: once the writing side is closed and everything was read.
            ClosedResourceError: if this stream is closed, also by another task while
                this one waits.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        # The checkpoint comes first: once bytes have been read nothing may cancel
        # this call, or they would be lost.
        await self._checkpoint()
        while True:
            if self._closed:
                raise ClosedResourceError
            try:
                data = os.read(self._fd, max_bytes)
            except BlockingIOError:
                await self._wait(wait_readable)
                continue
            if not data:
                raise EndOfStream
            return data


class PipeSendStream(_PipeEnd, ByteSendStream):
    """The write end of a pipe, as an AnyIO byte send stream."""

    async def send(self, item: bytes) -> None:
        """Write all of *item*, waiting while the pipe is full.

        A cancellation while waiting may leave *item* partly written.

        Raises:
            BrokenResourceError: if the reading side of the pipe is closed.
            ClosedResourceError: if this stream is closed, also by another task while
                this one waits.
        """
        # As in receive(): the checkpoint first, then the writes, which may wait.
        await self._checkpoint()
        view = memoryview(item).cast("B")
        while True:
            if self._closed:
                raise ClosedResourceError
            try:
                written = os.write(self._fd, view)
            except BlockingIOError:
                await self._wait(wait_writable)
                continue
            except (BrokenPipeError, ConnectionResetError) as exc:
                raise BrokenResourceError from exc
            if written == len(view):
                return
            view = view[written:]
