"""Functions the map and stream fault tests run in workers; importable there by name."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path


def sleep_then_echo(item: tuple[float, int]) -> int:
    seconds, value = item
    time.sleep(seconds)
    return value


def recorded_sleep_then_echo(item: tuple[str, float, int]) -> int:
    """Create ``started.<value>`` in the folder, then do what sleep_then_echo does."""
    folder, seconds, value = item
    Path(folder, f"started.{value}").touch()
    time.sleep(seconds)
    return value


def slow_count(n: int, seconds: float) -> Iterator[int]:
    for i in range(n):
        if seconds:
            time.sleep(seconds)
        yield i
