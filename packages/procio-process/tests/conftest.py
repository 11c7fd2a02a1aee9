"""Leak checks shared by the process layer's tests."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

import psutil
import pytest


def open_fds() -> set[int]:
    """Return the file descriptors open in this process right now."""
    # Both listings include the fd of the directory being read, in both snapshots.
    directory = "/proc/self/fd" if sys.platform == "linux" else "/dev/fd"
    return {int(name) for name in os.listdir(directory)}


def children() -> list[psutil.Process]:
    """Return the direct children of this process, zombies included."""
    return psutil.Process().children(recursive=False)


class LeakGuard:
    """Remembers the fds and children open when created; :meth:`check` compares.

    Create it inside the test body, once the event loop (which opens fds of its own)
    is running.
    """

    def __init__(self) -> None:
        self._fds = open_fds()
        self._children = {p.pid for p in children()}

    def check(self) -> None:
        """Fail if a child or a file descriptor was left behind since creation."""
        new_children = [p for p in children() if p.pid not in self._children]
        assert new_children == [], f"children left behind: {new_children}"
        leaked = open_fds() - self._fds
        details = {fd: _describe(fd) for fd in leaked}
        assert not leaked, f"file descriptors left open: {details}"


def _describe(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return "?"


@pytest.fixture
def leak_guard() -> Callable[[], Callable[[], None]]:
    """Give ``start``: call it in the test body; the function it returns checks for leaks.

    The snapshot is taken inside the test because the event loop opens fds of its own.
    """

    def start() -> Callable[[], None]:
        return LeakGuard().check

    return start
