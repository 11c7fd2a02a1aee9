"""The parent's end of a worker's protocol pipes: frames out, frames in.

::

    parent                                   worker
    FrameChannel.send(frame) ---- request pipe ---->  (reads frames)
    FrameChannel.receive()   <--- response pipe ----  (writes frames)

A frame is a list of buffers (``_wire.encode_frame``), written with ``writev`` as far as
the pipe takes it and the rest once it has room; frames coming back are cut by a
``_wire.FrameReader``, which may hold several at once. Both pipes are
:class:`~procio_process._fdstream.FdHolder` objects: non-blocking, closed once, ``-1``
after, and their waiters woken by a close.

Every way the channel can fail ends in one :exc:`ChannelError` whose ``reason`` says
what happened in the worker's terms, and whose ``sent`` says whether any of the frame
had gone out (a worker that refused the first byte never saw the call).
"""

from __future__ import annotations

import asyncio
import sys
import weakref
from collections.abc import Callable
from contextlib import suppress
from typing import cast

import anyio
from anyio import BrokenResourceError, BusyResourceError, ClosedResourceError
from anyio.lowlevel import cancel_shielded_checkpoint
from procio_process._fdstream import TURN_BYTES, FdHolder

from . import _wire
from ._hosting import _current_library
from .abc import Buffer

if sys.platform == "linux":
    import array
    import fcntl
    import termios

    #: Linux answers FIONREAD on either end of a pipe: how many bytes wait in it.
    CAN_COUNT_UNREAD = True
else:  # pragma: no cover - other systems
    CAN_COUNT_UNREAD = False


class ChannelError(Exception):
    """The channel cannot carry the frame; the worker is lost to the protocol.

    Attributes:
        reason: what happened, for a :exc:`BrokenWorkerProcess`.
        sent: whether part of the frame being sent had reached the pipe.
    """

    def __init__(self, reason: str, *, sent: bool = True) -> None:
        super().__init__(reason)
        self.reason = reason
        self.sent = sent


class _ResponsePipe(FdHolder):
    """The response pipe's holder: on an asyncio loop, it stays registered between waits.

    A wait through ``anyio.wait_readable`` registers the fd with the event loop's
    selector and removes it once woken: two ``epoll_ctl`` calls for every reply that is
    waited for, which is most of them when calls come apart. This holder registers the
    fd once, on the first wait, and keeps it registered while the pipe stays empty.
    Level-triggered readiness makes that safe: the callback runs only while unread
    bytes wait, and if it finds no task waiting (the reply was read without a wait) it
    takes the fd off the loop, to register it again on the next wait.

    A loop that polls again before it runs the task a report woke (asyncio's selector
    loops do) reports the pipe once more, from before that task read: the first report
    after a wake is therefore checked against the bytes that wait in the pipe (one
    ``FIONREAD``), and dropped if there are none. Taken at its word, it would wake a
    later wait for a read that finds nothing, or, with nobody waiting, take the fd off
    the loop only for the next wait to put it back (two ``epoll_ctl`` calls per reply).
    At end of file the pipe is empty too, but the loop reports it again at once, and
    that report is taken.

    The loop's callback holds the holder through a weak reference, so an abandoned
    holder still closes its fd, and :meth:`close` (or the collection of the holder)
    takes the fd off the loop before the fd is closed: a later fd of the same number
    must not meet a stale registration. On Trio (or an asyncio loop without
    ``add_reader``) the waits go through AnyIO, as for any :class:`FdHolder`.
    """

    __slots__ = ("_loop", "_maybe_stale", "_waiter")

    def __init__(self, fd: int) -> None:
        super().__init__(fd)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._maybe_stale = False  # a report woke a wait, and none came since

    def __del__(self) -> None:
        if getattr(self, "_loop", None) is not None:  # (unset if __init__ failed)
            self._unregister()
        super().__del__()

    async def wait_readable(self) -> None:
        fd = self.fd
        if fd < 0:
            raise ClosedResourceError
        loop = asyncio._get_running_loop()
        if loop is None:  # Trio
            await super().wait_readable()
            return
        if loop is not self._loop:
            self._unregister()
            # Trio in guest mode runs on an asyncio loop, but its tasks cannot await
            # an asyncio future.
            if _current_library() not in (None, "asyncio"):
                await super().wait_readable()
                return
            try:
                loop.add_reader(fd, _pipe_readable, weakref.ref(self))
            except NotImplementedError:  # pragma: no cover - a loop without add_reader
                await super().wait_readable()
                return
            self._loop = loop
        if self._waiter is not None:
            raise BusyResourceError("reading from")
        self._waiter = waiter = loop.create_future()
        try:
            await waiter
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def _readable(self) -> None:
        if self._maybe_stale:
            self._maybe_stale = False
            if _unread(self.fd) == 0:
                return  # from before the woken task read (or at EOF: reported again)
        waiter = self._waiter
        if waiter is None:
            # Nobody waits: the bytes will be read without a wait, or by the next one.
            # Left registered, a level-triggered fd would run this on every loop pass.
            self._unregister()
            return
        self._waiter = None
        if not waiter.done():
            waiter.set_result(None)
            self._maybe_stale = True

    def _unregister(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and self.fd >= 0:
            with suppress(Exception):  # a loop closed meanwhile has nothing to remove
                loop.remove_reader(self.fd)

    def notify_closing(self) -> None:
        """Wake a task waiting on the fd with :exc:`ClosedResourceError`."""
        self._wake_closed()
        if self._waiters:  # a wait that went through AnyIO
            with suppress(RuntimeError):  # no event loop here: nobody waits
                anyio.notify_closing(self.fd)

    def _wake_closed(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(ClosedResourceError())

    def close(self) -> None:
        if self.fd >= 0:
            self._unregister()  # before the fd is closed, and its number reused
            self._wake_closed()
        super().close()  # wakes a wait that went through AnyIO


def _unread(fd: int) -> int | None:
    """How many bytes wait in the pipe *fd* (``None``: unknown)."""
    if not CAN_COUNT_UNREAD or fd < 0:
        return None
    count = array.array("i", [0])
    try:
        fcntl.ioctl(fd, termios.FIONREAD, count)
    except OSError:
        return None
    return count[0]


def _pipe_readable(ref: weakref.ReferenceType[_ResponsePipe]) -> None:
    holder = ref()
    if holder is not None:
        holder._readable()


def _describe(exc: BaseException) -> str:
    # FdHolder's errors are chained to the system's; the system's names the cause.
    return repr(exc.__cause__ if isinstance(exc.__cause__, OSError) else exc)


class FrameChannel:
    """The request pipe's write end and the response pipe's read end of one worker.

    Args:
        request_fd: the parent's end of the pipe the worker reads its calls from.
        response_fd: the parent's end of the pipe the worker answers on.
        max_frame_length: the largest frame accepted from the worker.
        exited: whether the worker has exited, asking the system if need be; it tells
            a worker that exited from a channel closed under a waiting call.

    Attributes:
        request, response: the two pipes' holders (their ``fd`` is ``-1`` once closed).
        reader: cuts the response pipe's bytes into frames; ``reader.frames`` holds
            those read but not yet taken.
        peer_gone: set by :meth:`peer_exited`; a call that would wait fails at once.
    """

    __slots__ = ("_exited", "peer_gone", "reader", "request", "response")

    def __init__(
        self,
        request_fd: int,
        response_fd: int,
        max_frame_length: int,
        exited: Callable[[], bool],
    ) -> None:
        self.request = FdHolder(request_fd)
        self.response = _ResponsePipe(response_fd)
        self.reader = _wire.FrameReader(max_frame_length)
        self.peer_gone = False
        self._exited = exited

    def __repr__(self) -> str:
        return f"<FrameChannel request={self.request.fd} response={self.response.fd}>"

    def peer_exited(self) -> None:
        """Note that the worker exited, and wake the tasks waiting on either pipe.

        A fork of the worker may hold the pipes open after it exits, and then no end of
        file or broken pipe ever comes: this is what ends the wait.
        """
        self.peer_gone = True
        if self.response.fd >= 0:
            self.response.notify_closing()
        fd = self.request.fd
        if fd >= 0:
            anyio.notify_closing(fd)

    def unread_requests(self) -> int | None:
        """Return how many bytes sent to the worker it has not read (``None``: unknown)."""
        return _unread(self.request.fd)

    def unread_responses(self) -> int | None:
        """Return how many bytes the worker sent that wait to be read (``None``: unknown)."""
        return _unread(self.response.fd)

    def close(self) -> None:
        """Close both pipes, waking whoever waits on them (idempotent)."""
        try:
            self.request.close()
        finally:
            self.response.close()

    def send_shutdown(self) -> None:
        """Ask the worker to exit, if the request pipe takes the message at once."""
        with suppress(ClosedResourceError, BrokenResourceError):
            self.request.writev(_SHUTDOWN)

    async def send(self, buffers: list[Buffer], *, started: bool = False) -> None:
        """Write a frame (or its rest: *started* if part of it went out already).

        Raises:
            ChannelError: the worker exited, the channel was closed, or the pipe broke.
        """
        request = self.request
        unbroken = 0  # bytes written since the last wait or turn
        while buffers:
            try:
                # Any buffer-protocol object goes, as os.writev takes them.
                written = request.writev(cast("list[bytes]", buffers))
            except (ClosedResourceError, BrokenResourceError) as exc:
                # A worker that died while idle refuses the very first byte: the call
                # never reached it, and the pool may run it elsewhere.
                raise ChannelError(
                    f"could not send to the worker ({_describe(exc)})", sent=started
                ) from exc
            if written is None:
                # No checkpoint between this test and the wait below: peer_exited cannot
                # slip in between, so an exit is either seen here or wakes the wait.
                if self.peer_gone:
                    raise ChannelError("the worker exited during the call")
                try:
                    await request.wait_writable()
                except ClosedResourceError as exc:
                    what = "the worker exited" if self._exited() else "the pool closed"
                    raise ChannelError(f"{what} during the call") from exc
                unbroken = 0
                continue
            started = True
            buffers = _wire.skip_written(buffers, written)
            unbroken += written
            if unbroken >= TURN_BYTES and buffers:
                # (Shielded: the frame goes on as if no turn were taken.)
                await cancel_shielded_checkpoint()
                unbroken = 0

    async def receive(self, *, wait_first: bool = False) -> _wire.Frame:
        """Return the next frame from the worker, waiting for it if need be.

        *wait_first*: the caller has just found the pipe empty, so wait before reading
        (a read now would most likely find nothing again, for the cost of a system call).

        Raises:
            ChannelError: end of file, a malformed frame, the worker exited, or the
                channel was closed.
        """
        reader = self.reader
        response = self.response
        try:
            read = not wait_first
            unbroken = 0  # bytes read since the last wait or turn
            while not reader.frames:
                count = None
                if read:
                    view = reader.buffer()
                    try:
                        count = response.readinto(view)
                    finally:
                        del view
                read = True
                if count is None:
                    # As in send: an exit is seen here or wakes the wait.
                    if self.peer_gone:
                        raise ChannelError("the worker exited before it answered")
                    await response.wait_readable()
                    unbroken = 0
                    continue
                if not count:
                    reader.eof()
                    raise ChannelError("the worker closed its end of the protocol")
                reader.commit(count)
                unbroken += count
                if unbroken >= TURN_BYTES and not reader.frames:
                    await cancel_shielded_checkpoint()  # (as in send)
                    unbroken = 0
        except _wire.ProtocolError as exc:
            raise ChannelError(str(exc)) from None
        except (ClosedResourceError, BrokenResourceError) as exc:
            if self.peer_gone:
                raise ChannelError("the worker exited before it answered") from exc
            raise ChannelError(f"could not read from the worker ({_describe(exc)})") from exc
        return reader.frames.popleft()


_SHUTDOWN = [bytes(part) for part in _wire.encode_frame(_wire.SHUTDOWN, [])]
