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

A receive whose first read comes back large (the child is streaming) keeps reading, in
pieces of at most :data:`READ_PIECE` bytes, until the pipe is empty or it holds
*max_bytes* (at most :data:`READ_ON_BYTES`), with at most :data:`MAX_READS` system
calls: it follows the child with back-to-back reads, as a blocking reader would, and
pays the cost of one receive (its cancellation check, its coroutine frames) per 64 KiB
rather than per piece. A reader that instead returns after every read falls a few
microseconds behind the child each time and then takes larger reads; the kernel locks
the pipe for the whole of a read, so a long copy out of the pipe holds up the child's
next write, and a child that writes in small pieces (4 KiB for GNU head) slows down
behind it. The first read asks for all of *max_bytes*, so that a full pipe is still
emptied in one call.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

from anyio import BrokenResourceError, ClosedResourceError, EndOfStream
from anyio.abc import ByteReceiveStream, ByteSendStream
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint, checkpoint_if_cancelled

from ._fdstream import TURN_BYTES, FdHolder

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
#: The most one read(2) of a receive asks for. A receive whose first read brings at
#: least :data:`STREAMING_READ` bytes goes on reading pieces of this size until the pipe
#: is empty or it holds *max_bytes*, and returns them joined.
READ_PIECE = 16384
#: The most read(2) calls one receive makes (a child that writes tiny pieces quickly
#: must not keep its reader from the event loop for long): at most this many pieces.
MAX_READS = 16
#: A receive reads on only while it holds fewer bytes than this (or than *max_bytes*,
#: if less): with a large *max_bytes* too, a task that receives without pause gets to
#: the event loop (:data:`YIELD_EVERY`) after about as many bytes as one pipe's worth
#: per receive.
READ_ON_BYTES = DEFAULT_MAX_BYTES


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
        # Pieces read by a receive that did not get to return them (an exception out of
        # a later read, KeyboardInterrupt included): the next receive returns them first.
        self._pieces: list[bytes] = []
        # A read error met after some bytes were read: raised by the next receive, once
        # those bytes have been returned.
        self._error: BrokenResourceError | None = None

    async def receive(self, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
        """Return up to *max_bytes* bytes, waiting until at least one is available.

        Raises:
            ValueError: if *max_bytes* is less than 1.
            EndOfStream: once the writing side is closed and everything was read.
            ClosedResourceError: if this stream is closed, also by another task while
                this one waits.
            BrokenResourceError: if reading the pipe fails.
        """
        if max_bytes < 1:
            raise ValueError("max_bytes must be a positive integer")
        # The checkpoint comes first: once bytes have been read nothing may cancel
        # this call, or they would be lost.
        await self._checkpoint()
        if self._pieces or self._error is not None:
            return self._leftovers(max_bytes)
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
        size = len(data)
        if not size:
            raise EndOfStream
        self._streaming = size >= STREAMING_READ
        if self._streaming and size < max_bytes and size < READ_ON_BYTES:
            return self._read_on(data, max_bytes if max_bytes < READ_ON_BYTES else READ_ON_BYTES)
        return data

    def _read_on(self, data: bytes, limit: int) -> bytes:
        """Return *data* and what else the pipe holds right now, up to *limit* bytes.

        Every read is kept in ``_pieces`` as soon as it returns, so that an exception
        out of a later one loses nothing.
        """
        holder = self._holder
        pieces = self._pieces
        pieces.append(data)
        size = len(data)
        reads = 1
        try:
            while size < limit and reads < MAX_READS:
                left = limit - size
                more = holder.read(left if left < READ_PIECE else READ_PIECE)
                if not more:
                    # Empty for now (None), or end of file (b""), which the next
                    # receive reads again.
                    break
                pieces.append(more)
                size += len(more)
                reads += 1
        except BrokenResourceError as exc:
            self._error = exc
        data = pieces[0] if len(pieces) == 1 else b"".join(pieces)
        pieces.clear()
        return data

    def _leftovers(self, max_bytes: int) -> bytes:
        """Return what an earlier receive read but did not return, or raise its error."""
        if self._holder.closed:
            self._pieces.clear()
            self._error = None
            raise ClosedResourceError
        pieces = self._pieces
        if pieces:
            data = b"".join(pieces)
            pieces.clear()
            if len(data) > max_bytes:
                pieces.append(data[max_bytes:])
                data = data[:max_bytes]
            return data
        error, self._error = self._error, None
        if error is None:  # pragma: no cover - only called with pieces or an error
            raise RuntimeError("nothing left over")
        raise error


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
        unbroken = 0  # bytes written since the last wait or turn
        while True:
            written = holder.write(view)
            if written is None:
                await holder.wait_writable()
                self._calls_since_yield = 0
                unbroken = 0
                continue
            if written == len(view):
                return
            view = view[written:]
            unbroken += written
            if unbroken >= TURN_BYTES:
                # A child that keeps pace never lets the pipe fill: the other tasks get
                # a turn anyway. Shielded: the send goes on as if none were taken.
                await cancel_shielded_checkpoint()
                self._calls_since_yield = 0
                unbroken = 0
