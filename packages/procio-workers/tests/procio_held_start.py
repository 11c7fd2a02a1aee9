"""A pool's worker start held open after it ended: the parent-side hook of the late-start tests.

A worker's start that ends in the same pass of the event loop as a cancellation (or as
a map's failure) leaves no checkpoint between the two, and no test could hit that
single pass every time. :class:`HeldStart` makes the window as wide as a test needs:
the chosen start runs to its end, then waits, shielded, until :meth:`HeldStart.release`.
"""

from __future__ import annotations

from typing import Any, cast

import anyio
from procio_workers import WorkerPool


class HeldStart:
    """Hold the *nth* worker start of *pool* (counted from 1) once it has ended.

    Attributes:
        count: the starts so far.
        pids: the pid of every worker started so far, in order.
        started: set once the held start has ended (its worker runs) and waits.
    """

    def __init__(self, pool: WorkerPool, nth: int = 1) -> None:
        self.count = 0
        self.pids: list[int] = []
        self.started = anyio.Event()
        self._gate = anyio.Event()
        real_start = pool._start

        async def start(**how: Any) -> Any:
            self.count += 1
            held = self.count == nth
            slot = await real_start(**how)
            self.pids.append(cast(int, slot.worker.pid))
            if held:
                self.started.set()
                with anyio.CancelScope(shield=True):
                    await self._gate.wait()
            return slot

        pool._start = start  # type: ignore[method-assign]

    @property
    def released(self) -> bool:
        """Whether :meth:`release` was called."""
        return self._gate.is_set()

    def release(self) -> None:
        """Let the held start return its worker."""
        self._gate.set()
