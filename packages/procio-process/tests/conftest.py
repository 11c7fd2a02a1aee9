"""Leak checks shared by the process layer's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable

import pytest
from procio_process._procfs import proc_stats

# Linux lists processes in /proc; elsewhere ps does it (a variable, not a platform
# check, so the type checker keeps both branches).
HAS_PROC = sys.platform == "linux"


def open_fds() -> set[int]:
    """Return the file descriptors open in this process right now."""
    # Both listings include the fd of the directory being read, in both snapshots.
    directory = "/proc/self/fd" if sys.platform == "linux" else "/dev/fd"
    return {int(name) for name in os.listdir(directory)}


def children() -> dict[int, str]:
    """Return the direct children of this process, zombies included, with their state.

    The state is the one-letter code of ``ps``: ``Z`` for a zombie, ``R``, ``S``...
    """
    me = os.getpid()
    if HAS_PROC:
        return {stat.pid: stat.state for stat in proc_stats() if stat.ppid == me}
    found: dict[int, str] = {}
    with subprocess.Popen(["ps", "-A", "-o", "pid=,ppid=,stat="], stdout=subprocess.PIPE) as ps:
        listing, _ = ps.communicate()
    for row in listing.decode().splitlines():
        pid_text, ppid_text, ps_state = row.split()[:3]
        if int(ppid_text) == me and int(pid_text) != ps.pid:
            found[int(pid_text)] = ps_state[0]
    return found


def running_group_members(pgid: int) -> list[int]:
    """Return the pids in process group *pgid* that still run (zombies excluded)."""
    if HAS_PROC:
        return [
            stat.pid for stat in proc_stats() if stat.pgrp == pgid and stat.state not in ("Z", "X")
        ]
    # macOS and other systems without /proc: ps lists the group's members.
    with subprocess.Popen(["ps", "-A", "-o", "pid=,pgid=,stat="], stdout=subprocess.PIPE) as ps:
        listing, _ = ps.communicate()
    members = []
    for row in listing.decode().splitlines():
        pid_text, pgid_text, ps_state = row.split()[:3]
        if int(pgid_text) == pgid and ps_state[0] not in ("Z", "X"):
            members.append(int(pid_text))
    return members


class LeakGuard:
    """Remembers the fds and children open when created; :meth:`check` compares.

    Create it inside the test body, once the event loop (which opens fds of its own)
    is running.
    """

    def __init__(self) -> None:
        self._fds = open_fds()
        self._children = set(children())

    def check(self) -> None:
        """Fail if a child or a file descriptor was left behind since creation."""
        new_children = {
            pid: state for pid, state in children().items() if pid not in self._children
        }
        assert new_children == {}, f"children (pid: state) left behind: {new_children}"
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


@pytest.fixture
def list_children() -> Callable[[], dict[int, str]]:
    """Give a function listing this process's children (pid to ``ps`` state letter)."""
    return children


@pytest.fixture
def group_members() -> Callable[[int], list[int]]:
    """Give a function listing the running members of a process group (/proc, or ps)."""
    return running_group_members
