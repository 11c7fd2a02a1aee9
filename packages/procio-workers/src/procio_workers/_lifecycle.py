"""Where a process worker is in its life: one state, and the moves between states.

::

    STARTING --started--> IDLE --call--> BUSY --answer--> IDLE
        |                  |              |
        +------break-------+---break------+---> BROKEN
        |                  |              |        |
        +------close-------+---close------+--------+---> CLOSING --closed--> CLOSED

A worker takes a call only when IDLE, and is IDLE again only once the call's answer
(its RESULT, ERROR or END) was read: whatever else ends a call (a cancellation, a
KeyboardInterrupt, an error raised while waiting) leaves it BUSY, and a BUSY worker is
never handed another call, which would read the first one's answer. An answer or a
failure that comes after the worker began closing leaves it closing. Any other move is
a bug in procio, and raises :exc:`WorkerStateError`.
"""

from __future__ import annotations

import enum


class WorkerState(enum.Enum):
    """The states of a process worker."""

    #: Started; the handshake is under way.
    STARTING = "starting"
    #: Ready for a call.
    IDLE = "idle"
    #: A call, a batch or a stream was sent and its answer is not read yet.
    BUSY = "busy"
    #: The process or the protocol failed; it takes no more calls.
    BROKEN = "broken"
    #: Killed, or asked to exit; being reaped.
    CLOSING = "closing"
    #: Reaped, its pipes closed.
    CLOSED = "closed"


class WorkerStateError(RuntimeError):
    """An internal error: a worker was moved in a way its state does not allow."""


_S = WorkerState

#: For each event, the state it moves each state to; a state not listed refuses it.
TRANSITIONS: dict[str, dict[WorkerState, WorkerState]] = {
    "started": {_S.STARTING: _S.IDLE},
    "call": {_S.IDLE: _S.BUSY},
    "answer": {_S.BUSY: _S.IDLE, _S.CLOSING: _S.CLOSING},
    "break": {
        _S.STARTING: _S.BROKEN,
        _S.IDLE: _S.BROKEN,
        _S.BUSY: _S.BROKEN,
        _S.CLOSING: _S.CLOSING,
        _S.CLOSED: _S.CLOSED,
    },
    "close": {
        _S.STARTING: _S.CLOSING,
        _S.IDLE: _S.CLOSING,
        _S.BUSY: _S.CLOSING,
        _S.BROKEN: _S.CLOSING,
        _S.CLOSING: _S.CLOSING,
        _S.CLOSED: _S.CLOSED,
    },
    "closed": {_S.CLOSING: _S.CLOSED},
}


class WorkerLifecycle:
    """The state of a worker and its transitions (a base of :class:`ProcessWorker`).

    Each transition method moves the state as :data:`TRANSITIONS` says, or raises
    :exc:`WorkerStateError`.
    """

    _state: WorkerState

    @property
    def state(self) -> WorkerState:
        """Where the worker is in its life."""
        return self._state

    def _move(self, event: str) -> None:
        try:
            self._state = TRANSITIONS[event][self._state]
        except KeyError:
            raise WorkerStateError(
                f"a {self._state.value} worker cannot take the event {event!r}"
            ) from None

    def _started(self) -> None:
        """The handshake is complete."""
        self._move("started")

    def _call_begins(self) -> None:
        """A call, batch or stream is about to be sent."""
        self._move("call")

    def _answered_now(self) -> None:
        """The answer that ends the call under way was read."""
        self._move("answer")

    def _broke(self) -> None:
        """The process or the protocol failed."""
        self._move("break")

    def _closing(self) -> None:
        """The worker is being killed or asked to exit."""
        self._move("close")

    def _closed(self) -> None:
        """The worker is reaped and its pipes are closed."""
        self._move("closed")
