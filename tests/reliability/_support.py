"""Shared tools of the reliability suite: seeds, scale, leak checks and a tally.

Every random choice in this suite comes from ``random.Random(seed)``. The seed is fixed
for the session (``PROCIO_RELIABILITY_SEED``, or a fresh one printed in the pytest
header and in every assertion message), so a failure can be replayed with the same
scenarios, values and deadlines (what the operating system's timing decides may differ).

``PROCIO_RELIABILITY_SCALE`` multiplies every count (spawns, calls, fuzzing examples);
``scripts/soak.py`` raises it for the long on-demand soak. ``PROCIO_RELIABILITY_REPORT``
names a JSON file that receives the tally of what was exercised, which ``soak.py``
prints.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import Counter
from typing import Any

import psutil  # type: ignore[import-untyped, unused-ignore]  # no types without types-psutil
import pytest

# Drawn once for the whole run by the root conftest.py (or given), never here: a process
# of a parallel run that drew its own would replay nothing the header names.
SEED = int(os.environ["PROCIO_RELIABILITY_SEED"])
SCALE = float(os.environ.get("PROCIO_RELIABILITY_SCALE") or 1.0)
_REPORT = os.environ.get("PROCIO_RELIABILITY_REPORT")

#: Counts of what the suite exercised (spawns, calls, faults, fuzzed inputs...).
TALLY: Counter[str] = Counter()


def scaled(count: int) -> int:
    """Return *count* scaled by ``PROCIO_RELIABILITY_SCALE`` (at least 1)."""
    return max(1, round(count * SCALE))


def load_count(figure: str, per_backend: int) -> int:
    """Return how many spawns or calls one load test makes on one backend.

    ``PROCIO_RELIABILITY_SPAWNS`` / ``PROCIO_RELIABILITY_CALLS`` set the total across the
    load backends (``soak.py --spawns/--calls``); otherwise *per_backend*, scaled.
    """
    total = os.environ.get(f"PROCIO_RELIABILITY_{figure.upper()}")
    if total:
        return max(1, int(total) // len(LOAD_BACKENDS))
    return scaled(per_backend)


def rng_for(name: str) -> random.Random:
    """Return a generator seeded from the session seed and *name* (a test's own stream)."""
    return random.Random(f"{SEED}:{name}")


def tally(name: str, count: int = 1) -> None:
    """Add *count* to the figure called *name* in the suite's report."""
    TALLY[name] += count


def replay_hint() -> str:
    """Return the text to put in an assertion message so a failure can be replayed."""
    return f"seed {SEED} (replay with PROCIO_RELIABILITY_SEED={SEED})"


def write_report() -> None:
    """Write the tally to the file named by ``PROCIO_RELIABILITY_REPORT``, if any.

    In a parallel run each process writes its own share, to that name followed by
    ``.`` and the process's name (``gw0``...); ``soak.py`` runs the suite in one process.
    """
    if _REPORT:
        worker = os.environ.get("PYTEST_XDIST_WORKER")
        path = f"{_REPORT}.{worker}" if worker else _REPORT
        with open(path, "w", encoding="utf-8") as report:
            json.dump({"seed": SEED, "scale": SCALE, "counts": dict(TALLY)}, report)


# -- backends ------------------------------------------------------------------------


def _asyncio_and_trio() -> list[Any]:
    return [
        pytest.param(("asyncio", {}), id="asyncio"),
        pytest.param(("trio", {}), id="trio"),
    ]


#: The load tests run on asyncio and Trio only (the issue asks for those two): uvloop
#: shares asyncio's code path in procio (pidfds and fd readiness, no child watcher), and
#: a third pass of thousands of spawns would eat the suite's time budget for no new
#: coverage. The fault and fuzzing tests still run on all three backends.
LOAD_BACKENDS = _asyncio_and_trio()


# -- leak checks -----------------------------------------------------------------------


def open_fds() -> dict[int, str]:
    """Return the file descriptors open in this process and what each points to."""
    directory = "/proc/self/fd" if sys.platform == "linux" else "/dev/fd"
    fds = {}
    for name in os.listdir(directory):
        try:
            fds[int(name)] = os.readlink(f"{directory}/{name}")
        except OSError:
            continue  # the descriptor of the directory listing itself, now closed
    return fds


def descendants(*, recursive: bool = True) -> list[Any]:
    """Return every process (``psutil.Process``) below this one, zombies included."""
    try:
        found: list[Any] = psutil.Process().children(recursive=recursive)
    except psutil.Error:  # pragma: no cover - a child vanished mid-walk; look again
        found = psutil.Process().children(recursive=recursive)
    return found


def pid_alive(pid: int) -> bool:
    """Whether *pid* names a process that still runs (a zombie counts as gone)."""
    try:
        status: str = psutil.Process(pid).status()
    except psutil.NoSuchProcess:
        return False
    zombie: str = psutil.STATUS_ZOMBIE
    return status != zombie


def pid_exists(pid: int) -> bool:
    """Whether *pid* names a process at all, a zombie included."""
    exists: bool = psutil.pid_exists(pid)
    return exists


class LeakGuard:
    """A snapshot of descriptors and descendants; :meth:`check` fails on anything new.

    Create it inside the event loop (which opens descriptors of its own), before the
    work, and call :meth:`check` after it, still inside the loop for a loop-bound check
    or after ``anyio.run`` returns for a check that the loop's end cleaned up.
    """

    def __init__(self, context: str = "") -> None:
        self.context = context
        self._fds = open_fds()
        self._pids = {p.pid for p in descendants()}
        #: Process ids the work promised to stop (grandchildren of signal_tree runs).
        self.promised: set[int] = set()

    def check(self) -> None:
        """Assert: no new descendant (zombie or not), no new fd, no promised pid alive."""
        hint = f"{self.context}; {replay_hint()}"
        new = [p for p in descendants() if p.pid not in self._pids]
        zombies = [p.pid for p in new if _status(p) == psutil.STATUS_ZOMBIE]
        assert not zombies, f"zombies left behind: {zombies}; {hint}"
        assert not new, f"processes left behind: {[_describe(p) for p in new]}; {hint}"
        alive = sorted(pid for pid in self.promised if pid_alive(pid))
        assert not alive, f"grandchildren that had to be stopped still run: {alive}; {hint}"
        now = open_fds()
        leaked = {fd: target for fd, target in now.items() if self._fds.get(fd) != target}
        assert not leaked, f"file descriptors left open: {leaked}; {hint}"


def _status(process: Any) -> str:
    try:
        return str(process.status())
    except psutil.NoSuchProcess:
        return "gone"


def _describe(process: Any) -> str:
    try:
        return f"{process.pid} {process.status()} {process.cmdline()}"
    except psutil.Error:
        return f"{process.pid} (gone)"
