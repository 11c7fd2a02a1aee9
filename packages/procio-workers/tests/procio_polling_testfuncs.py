"""Functions the idle-polling tests run in workers (importable by name there)."""

from __future__ import annotations

import sys
from typing import Any


def _worker() -> Any:
    return sys.modules["_procio_worker"]


def idle_poll() -> tuple[float, bool]:
    """Return this worker's idle polling as its INIT set it."""
    seconds, adaptive = _worker().IDLE_POLL
    return float(seconds), bool(adaptive)


def count_polls() -> None:
    """From now on, count the times this worker yields the CPU while polling for a call."""
    worker = _worker()
    original = worker._sched_yield
    if getattr(original, "procio_counter", None) is not None:
        original.procio_counter[0] = 0
        return
    counter = [0]

    def counting() -> None:
        counter[0] += 1
        original()

    counting.procio_counter = counter  # type: ignore[attr-defined]
    worker._sched_yield = counting


def polls() -> int:
    """Return how many times this worker polled for a call since count_polls()."""
    return int(_worker()._sched_yield.procio_counter[0])


def identity(x: object) -> object:
    return x


def users_inner_function(message: str) -> None:
    raise LookupError(message)


def users_outer_function(message: str) -> None:
    users_inner_function(message)
