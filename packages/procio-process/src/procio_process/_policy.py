"""How a child is stopped when the code waiting on it is cancelled or times out."""

from __future__ import annotations

import math
from dataclasses import dataclass
from signal import SIGTERM, Signals

#: Seconds between the polite signal and ``SIGKILL`` by default, as in Trio's
#: ``run_process``: long enough for a well-behaved program to flush and exit, short
#: enough that a stuck one does not hold up the cancellation for long.
DEFAULT_GRACE_PERIOD = 5.0


@dataclass(frozen=True)
class CancelPolicy:
    """What procio does to a child whose caller is cancelled (or whose timeout expires).

    The child is first sent :attr:`signal` (``SIGTERM`` unless set otherwise). If it has
    not exited after :attr:`grace_period` seconds, it is sent ``SIGKILL``. Either way
    procio then waits for it and reaps it, shielded from the cancellation, so that the
    ``returncode`` is set and no zombie is left. A ``grace_period`` of ``0`` sends
    ``SIGKILL`` at once (AnyIO's behaviour); see :meth:`kill`.

    When the process was opened with ``signal_tree=True``, every signal goes to the
    child's whole process group, and once the child has exited, procio waits for what
    is left of the group until the grace period ends and then kills it, so no
    grandchild outlives the cancellation.

    On Windows there are no signals: the child is terminated at once.

    Attributes:
        grace_period: seconds to wait after :attr:`signal` before ``SIGKILL``; ``0``
            kills at once.
        signal: the first signal sent (``SIGTERM`` by default; ``SIGINT`` suits
            programs that clean up on Ctrl-C).
    """

    grace_period: float = DEFAULT_GRACE_PERIOD
    signal: Signals = SIGTERM

    def __post_init__(self) -> None:
        if isinstance(self.grace_period, bool) or not isinstance(self.grace_period, (int, float)):
            raise TypeError(
                f"grace_period must be a number of seconds, not {type(self.grace_period).__name__}"
            )
        if math.isnan(self.grace_period) or self.grace_period < 0:
            raise ValueError(f"grace_period must be >= 0, got {self.grace_period!r}")
        sig: object = self.signal
        if not isinstance(sig, int) or isinstance(sig, bool):
            raise TypeError(f"signal must be a signal number, not {type(sig).__name__}")

    @classmethod
    def kill(cls) -> CancelPolicy:
        """Return the policy that sends ``SIGKILL`` at once, without a grace period."""
        return cls(grace_period=0)
