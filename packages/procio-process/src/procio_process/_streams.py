"""Byte streams over the parent's non-blocking ends of a child's pipes.

Each operation tries the system call first and only waits for readiness, through AnyIO's
``wait_readable``/``wait_writable``, when the pipe would block. The same code therefore
runs on asyncio, uvloop and Trio, with no transport, protocol or thread in between. The
fd itself, its closing and the mapping of errors belong to :class:`FdHolder`.

A receive that finds the pipe empty right after a large read gives the CPU away once
(``sched_yield``) and reads again before it waits: a child that streams output is
usually a few microseconds behind its reader, and on a busy machine the reader's trip
through the event loop (register the fd, poll, wake, unregister) costs more than the
child needs to refill the pipe.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from anyio import EndOfStream
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import checkpoint, checkpoint_if_cancelled

from ._fdstream import FdHolder

#: The default ``max_bytes`` of :meth:`PipeReceiveStream.receive`, as in AnyIO.
DEFAULT_MAX_BYTES = 65536
#: Every receive() and send() checks for cancellation; one that does not have to wait
#: for the pipe also yields to the event loop once in this many calls. A full yield is
#: a trip through the event loop, as costly as the read itself for a fast child, and a
#: task that reads without pause still lets the others run every few hundred
#: microseconds. A call that waits for the pipe has yielded anyway.
YIELD_EVERY = 16
#: A read of at least this many bytes marks the stream as streaming: its next receive,
#: if it finds the pipe empty, yields the CPU and reads once more before waiting. A
#: stream that receives small pieces (an interactive child) waits at once.
STREAMING_READ = 4096


def _no_yield() -> None:
    pass


#: Give the CPU to another runnable thread or process, if any, and come back at once
#: otherwise (a no-op where the system has no such call).
_yield_cpu: Callable[[], None] = getattr(os, "sched_yield", _no_yield)


class _PipeEnd:
    """What both ends share: the :class:`FdHolder` of their fd, and closing it."""

    def __init__(self, fd: int) -> None:
        self._holder = FdHolder(fd)
        self._calls_since_yield = 0

    def fileno(self) -> int:
        """Return the file descriptor, which stays owned by this stream (-1 once closed)."""
        return self._holder.fd

    @property
    def closed(self) -> bool:
        """Whether this stream has been closed."""
        return self._holder.fd < 0

    def close(self) -> None:
        """Close the pipe at once; a task waiting on it is woken."""
        self._holder.close()

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

    async def aclose(self) -> None:
        """Close the pipe; a task waiting on it is woken."""
        self.close()
        await checkpoint()


class PipeReceiveStream(_PipeEnd, ByteReceiveStream):
    """The read end of a pipe, as an AnyIO byte receive stream."""

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._streaming = False

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
        holder = self._holder
        data = holder.read(max_bytes)
        if data is None and self._streaming:
            # The child is most likely refilling the pipe right now: let it run
            # (system calls only, no event loop, nothing that can be cancelled) and
            # look again.
            _yield_cpu()
            data = holder.read(max_bytes)
        while data is None:
            await holder.wait_readable()
            self._calls_since_yield = 0  # waiting yielded to the event loop
            data = holder.read(max_bytes)
        if not data:
            raise EndOfStream
        self._streaming = len(data) >= STREAMING_READ
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
        holder = self._holder
        view = memoryview(item).cast("B")
        while True:
            written = holder.write(view)
            if written is None:
                await holder.wait_writable()
                self._calls_since_yield = 0
                continue
            if written == len(view):
                return
            view = view[written:]
