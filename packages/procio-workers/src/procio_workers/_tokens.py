"""The pool's worker tokens: at most ``max_workers`` held at once, in the order asked.

A pool bounds its workers with tokens: a call, or a lane of a map or a stream, holds
one while it holds a worker. The pool keeps its own count instead of an
:class:`anyio.CapacityLimiter` because the bound must hold on every anyio it accepts:
before anyio 4.14.2, the asyncio limiter woke the next waiter on a release but counted
that waiter as a borrower only once it ran, and a task that asked in between (with no
turn of the event loop, as a caller whose call has just ended and calls again does) got
the same token, so a pool of ``max_workers=1`` started a second worker.

Here a release hands its token to the first waiter at once: the token is that waiter's
before it runs, and nobody else can take it. A waiter cancelled (or interrupted) after
its token was handed to it passes the token on.
"""

from __future__ import annotations

from collections import deque

import anyio
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled


class _Waiter:
    __slots__ = ("event", "granted")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.granted = False


class Tokens:
    """A count of tokens, taken without a wait when one is free, else in FIFO order."""

    __slots__ = ("_free", "_waiters")

    def __init__(self, total: int) -> None:
        self._free = total
        # Not empty only while no token is free: a release hands its token to the first.
        self._waiters: deque[_Waiter] = deque()

    @property
    def available(self) -> int:
        """Tokens that a taker gets now, with no wait."""
        return self._free

    @property
    def waiting(self) -> int:
        """Takers waiting for a token."""
        return len(self._waiters)

    def take_nowait(self) -> bool:
        """Take a free token and return True, or return False if none is free."""
        if self._free:
            self._free -= 1
            return True
        return False

    async def take(self) -> None:
        """Take a token: at once (with a checkpoint) if one is free, else in turn."""
        await checkpoint_if_cancelled()
        if self.take_nowait():
            try:
                await cancel_shielded_checkpoint()
            except BaseException:
                self.release()
                raise
            return
        waiter = _Waiter()
        self._waiters.append(waiter)
        try:
            await waiter.event.wait()
        except BaseException:
            if waiter.granted:
                self.release()  # handed over, but this taker has gone: to the next one
            else:
                self._waiters.remove(waiter)
            raise

    def release(self) -> None:
        """Give a token back: to the first waiter, if any, else to the free ones."""
        if self._waiters:
            waiter = self._waiters.popleft()
            waiter.granted = True
            waiter.event.set()
        else:
            self._free += 1
