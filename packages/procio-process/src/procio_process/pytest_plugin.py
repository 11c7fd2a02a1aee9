"""A pytest plugin that fails a test which leaks processes or file descriptors.

Installed with ``procio-process`` and loaded by pytest on its own (entry point group
``pytest11``). It adds nothing to a test session until a test asks for it:

- the ``procio_leak_check`` fixture: a :class:`LeakChecker` taken before the test and
  checked after it (the test may also call :meth:`LeakChecker.check` itself);
- the ``procio_leak_check`` marker: the same check for every test it marks (on a test,
  a class or a module through ``pytestmark``).

What counts as a leak, between the snapshot and the check:

- a file descriptor of this process that is new, or that now points elsewhere;
- a child process of this process (or a descendant of one) that still runs, and a child
  that has exited but was never reaped (a zombie);
- on Linux, a process that the test started, directly or not, which still runs
  anywhere, however it was reparented: a grandchild that outlived its parent, a member
  of a process group or session the test created. The checker finds these through a
  marker it puts into ``os.environ`` for the duration of the test, which every process
  started with the inherited environment carries; a process started with an
  ``env=`` of its own does not, and is found only while it is a descendant. A process
  caught inside an exec, whose environment reads empty until its new program's is in
  place, is read again for up to half a second.

Take the snapshot where the event loop's own descriptors already exist, or before the
loop is created and check after it is closed, as the fixture does (it is synchronous,
so anyio's pytest plugin sets it up before the test's event loop and tears it down
after).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ._procfs import proc_stats

__all__ = ["MARKER_VARIABLE", "LeakChecker", "LeakError", "procio_leak_check"]

#: The environment variable that marks the processes a checked test started.
MARKER_VARIABLE = "PROCIO_LEAK_CHECK"


class LeakError(AssertionError):
    """What a :class:`LeakChecker` found: each kind of leak in an attribute of its own."""

    def __init__(
        self,
        fds: dict[int, str],
        running: list[str],
        zombies: list[int],
        escaped: list[str],
    ) -> None:
        self.fds = fds
        self.running = running
        self.zombies = zombies
        self.escaped = escaped
        parts = []
        if fds:
            parts.append(f"file descriptors left open: {fds}")
        if zombies:
            parts.append(f"child processes never reaped (zombies): {zombies}")
        if running:
            parts.append(f"child processes still running: {running}")
        if escaped:
            parts.append(f"processes started by the test still running elsewhere: {escaped}")
        super().__init__("; ".join(parts))


@dataclass(frozen=True)
class _Proc:
    pid: int
    ppid: int
    state: str
    command: str


def _open_fds() -> dict[int, str]:
    directory = "/proc/self/fd" if sys.platform == "linux" else "/dev/fd"
    fds = {}
    for name in os.listdir(directory):
        try:
            fds[int(name)] = os.readlink(f"{directory}/{name}")
        except OSError:
            continue  # the descriptor of the listing itself, closed by now
    return fds


def _linux_processes() -> dict[int, _Proc]:
    return {s.pid: _Proc(s.pid, s.ppid, s.state, s.command) for s in proc_stats()}


def _ps_processes() -> dict[int, _Proc]:
    listing = subprocess.run(
        ["ps", "-A", "-o", "pid=,ppid=,stat=,comm="],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = {}
    for line in listing.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4:
            pid, ppid = int(fields[0]), int(fields[1])
            found[pid] = _Proc(pid, ppid, fields[2][:1], fields[3])
    return found


def _processes() -> dict[int, _Proc]:
    return _linux_processes() if sys.platform == "linux" else _ps_processes()


def _descendants(table: dict[int, _Proc], root: int) -> list[_Proc]:
    children: dict[int, list[_Proc]] = {}
    for proc in table.values():
        children.setdefault(proc.ppid, []).append(proc)
    found: list[_Proc] = []
    stack = [root]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child.pid)
    return found


#: How long a check waits, at most, for the environment of a process started since the
#: snapshot that reads empty: caught between fork and exec, or inside its exec, a process
#: shows none until its new program's is in place.
_SETTLE_SECONDS = 0.5


def _carries_marker(pid: int, needle: bytes) -> bool | None:
    """Whether *pid*'s environment holds *needle*; ``None`` if it reads empty."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            environ = f.read()
    except OSError:
        return False  # gone, or not ours to read
    if not environ:
        return None
    return needle in b"\0" + environ


def _boot_ticks() -> int:
    """Now, in the clock ticks since boot that ``/proc/<pid>/stat`` counts starts in."""
    return int(time.clock_gettime(time.CLOCK_BOOTTIME) * os.sysconf("SC_CLK_TCK"))


def _started_since(pid: int, ticks: int) -> bool:
    """Whether *pid* started at or after *ticks* (see :func:`_boot_ticks`)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return False  # gone
    # The fields after the command name: the state is field 3, the start time field 22.
    fields = stat[stat.rfind(b")") + 2 :].split()
    return len(fields) > 19 and int(fields[19]) >= ticks


class LeakChecker:
    """A snapshot of this process's descriptors and children; :meth:`check` compares.

    Creating it takes the snapshot and, on Linux, marks the processes started from now
    on through ``os.environ``; :meth:`check` (or :meth:`close`) removes the mark.
    """

    def __init__(self) -> None:
        self._fds = _open_fds()
        self._pid = os.getpid()
        self._before = {p.pid for p in _descendants(_processes(), self._pid)}
        self._token = uuid.uuid4().hex
        self._previous = os.environ.get(MARKER_VARIABLE)
        self._marking = sys.platform == "linux"
        if self._marking:
            self._since = _boot_ticks()
            os.environ[MARKER_VARIABLE] = self._token

    def close(self) -> None:
        """Stop marking new processes (idempotent)."""
        if self._marking and os.environ.get(MARKER_VARIABLE) == self._token:
            if self._previous is None:
                del os.environ[MARKER_VARIABLE]
            else:
                os.environ[MARKER_VARIABLE] = self._previous

    def leaks(self) -> LeakError | None:
        """Return what leaked since the snapshot, or ``None`` when nothing did."""
        now = _open_fds()
        fds = {fd: target for fd, target in now.items() if self._fds.get(fd) != target}
        table = _processes()
        mine = [p for p in _descendants(table, self._pid) if p.pid not in self._before]
        zombies = sorted(p.pid for p in mine if p.state == "Z")
        running = [f"{p.pid} {p.command}" for p in mine if p.state != "Z"]
        escaped = []
        if self._marking:
            known = {p.pid for p in mine} | {self._pid}
            others = [p for p in table.values() if p.pid not in known and p.state != "Z"]
            escaped = [f"{p.pid} {p.command}" for p in self._marked(others)]
        if fds or zombies or running or escaped:
            return LeakError(fds, running, zombies, escaped)
        return None

    def _marked(self, candidates: list[_Proc]) -> list[_Proc]:
        """The *candidates* whose environment carries this checker's marker.

        One whose environment reads empty and that started since the snapshot may be in
        the middle of an exec: it is read again until its environment is there, for up
        to :data:`_SETTLE_SECONDS` (a process started with an empty environment of its
        own costs the check that wait, and is not reported).
        """
        needle = f"\0{MARKER_VARIABLE}={self._token}\0".encode()
        marked = []
        unsettled = []
        for proc in candidates:
            found = _carries_marker(proc.pid, needle)
            if found:
                marked.append(proc)
            elif found is None and _started_since(proc.pid, self._since):
                unsettled.append(proc)
        deadline = time.monotonic() + _SETTLE_SECONDS
        while unsettled and time.monotonic() < deadline:
            time.sleep(0.005)
            waiting = []
            for proc in unsettled:
                found = _carries_marker(proc.pid, needle)
                if found:
                    marked.append(proc)
                elif found is None:
                    waiting.append(proc)
            unsettled = waiting
        return marked

    def check(self) -> None:
        """Stop marking, and raise :class:`LeakError` if anything leaked."""
        self.close()
        found = self.leaks()
        if found is not None:
            raise found


@pytest.fixture
def procio_leak_check() -> Iterator[LeakChecker]:
    """A :class:`LeakChecker` taken before the test and checked after it."""
    checker = LeakChecker()
    try:
        yield checker
    finally:
        checker.close()
    checker.check()


def pytest_configure(config: pytest.Config) -> None:
    """Declare the marker."""
    config.addinivalue_line(
        "markers",
        "procio_leak_check: fail the test if it leaves a process, a zombie or an open "
        "file descriptor behind (procio-process's leak checker)",
    )


@pytest.fixture(autouse=True)
def _procio_leak_check_marked(request: pytest.FixtureRequest) -> None:
    # Autouse fixtures are set up first: the snapshot precedes the test's own fixtures,
    # and its check follows their teardown.
    if request.node.get_closest_marker("procio_leak_check") is not None:
        request.getfixturevalue("procio_leak_check")
