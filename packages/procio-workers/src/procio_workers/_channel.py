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

import sys
from collections.abc import Callable
from contextlib import suppress
from typing import cast

import anyio
from anyio import BrokenResourceError, ClosedResourceError
from procio_process._fdstream import FdHolder

from . import _wire
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
        self.response = FdHolder(response_fd)
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
        for holder in (self.response, self.request):
            fd = holder.fd
            if fd >= 0:
                anyio.notify_closing(fd)

    def unread_requests(self) -> int | None:
        """Return how many bytes sent to the worker it has not read (``None``: unknown)."""
        fd = self.request.fd
        if not CAN_COUNT_UNREAD or fd < 0:
            return None
        count = array.array("i", [0])
        try:
            fcntl.ioctl(fd, termios.FIONREAD, count)
        except OSError:
            return None
        return count[0]

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
                continue
            started = True
            buffers = _wire.skip_written(buffers, written)

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
                    continue
                if not count:
                    reader.eof()
                    raise ChannelError("the worker closed its end of the protocol")
                reader.commit(count)
        except _wire.ProtocolError as exc:
            raise ChannelError(str(exc)) from None
        except (ClosedResourceError, BrokenResourceError) as exc:
            if self.peer_gone:
                raise ChannelError("the worker exited before it answered") from exc
            raise ChannelError(f"could not read from the worker ({_describe(exc)})") from exc
        return reader.frames.popleft()


_SHUTDOWN = [bytes(part) for part in _wire.encode_frame(_wire.SHUTDOWN, [])]
