"""Run workers under ``nice``."""

from __future__ import annotations

from collections.abc import Sequence

from procio_workers.abc import Launcher


class NiceLauncher(Launcher):
    """Start each worker under ``nice -n NICENESS``.

    Args:
        niceness: how much to lower the workers' scheduling priority (POSIX ``nice``
            adjustment, 1 to 19; higher is kinder to the rest of the machine).
        nice: the ``nice`` executable.
    """

    def __init__(self, niceness: int = 10, *, nice: str = "nice") -> None:
        if not 0 <= niceness <= 19:
            raise ValueError("niceness must be between 0 and 19")
        self.niceness = niceness
        self.nice = nice

    def command(self, argv: Sequence[str]) -> list[str]:
        """Prefix the worker's command line with ``nice -n NICENESS``."""
        return [self.nice, "-n", str(self.niceness), *argv]
