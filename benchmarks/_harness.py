"""Shared plumbing for the benchmark scripts: interleaved sampling, and one row format.

Why not pyperf's ``Runner``: it runs one benchmark's worker processes to the end before
it starts the next benchmark, so a change in the machine's load between the two lands
on one contender only, and every target here is a *ratio* of two contenders. Its
workers also cannot hold an event loop with a warm worker pool across samples, nor
measure the CPU that a worker process spends. So each script measures in *rounds*: one
sample of every contender per round (see :func:`rounds` for the order), after a
warm-up; ``run.py`` runs each script in several fresh interpreters (as pyperf does, so
that one process's luck with hashing or memory layout does not decide a figure) and
joins the samples.
pyperf is used for what it is good at: the machine metadata, and the file format, so
that ``python -m pyperf stats`` and ``compare_to`` work on the samples (``run.py
--pyperf``).

A script hands its rows to :func:`report`, which prints them and, with ``--json PATH``,
appends them to that file for ``run.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar


@dataclass
class Row:
    """One contender's samples for one figure.

    Attributes:
        figure: the figure's key, e.g. ``"round-trip"``; rows of one figure are compared
            with each other, and docs blocks name figures by this key.
        title: what is measured, in words, e.g. ``"worker round trip f(x) = x"``.
        section: ``"process"``, ``"text"``, ``"workers"`` or ``"dask"``: the chart
            draws every section but Dask's, whose figures are of another kind.
        name: who was measured, e.g. ``"procio (asyncio)"``.
        role: ``"subject"`` for procio's headline row, ``"anyio"`` for AnyIO,
            ``"floor"`` for the best this machine can do, ``"floor-2"`` for a second
            floor (the blocking ping-pong beside the busy-polling one), ``"other"``.
        unit: the unit of every sample, e.g. ``"calls/s"``, ``"MB/s"``, ``"µs"``.
        higher_is_better: whether a larger value is the better one.
        samples: one value per round, in the order of the rounds, so that samples of
            two rows of one figure taken in the same round can be paired.
        note: a sentence the figure's table shows under its title (one row of the
            figure carrying it is enough).
    """

    figure: str
    title: str
    section: str
    name: str
    role: str
    unit: str
    higher_is_better: bool
    samples: list[float] = field(default_factory=list)
    note: str = ""


def parser(description: str) -> argparse.ArgumentParser:
    """Return the argument parser every benchmark script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--json", type=Path, help="append the rows to this JSON file")
    return p


def rounds(count: int, contenders: Sequence[str]) -> Iterator[tuple[int, str]]:
    """Yield ``(round, contender)`` for *count* rounds, every contender once per round.

    A contender measured right after another inherits what that one leaves behind (a
    busy-polling worker, garbage to collect, a dirty cache), so no contender may always
    come right after the same one. Turning the order by one each round is not enough:
    it keeps every contender behind the same neighbour. So the order turns, and every
    other round it is also reversed: each contender then comes after one neighbour in
    some rounds and after the other in the rest, and each goes first in turn.
    """
    if not contenders:
        return
    for index in range(count):
        reverse = index % 2
        shift = (index + reverse) % len(contenders)
        order = [*contenders[shift:], *contenders[:shift]]
        for name in reversed(order) if reverse else order:
            yield index, name


def rounds_in_groups(count: int, groups: Sequence[Sequence[str]]) -> Iterator[tuple[int, str]]:
    """:func:`rounds` for each group of contenders in turn, never mixing two groups.

    For contenders whose samples differ in size by orders of magnitude: a sample that
    lasts seconds and loads the whole process (thousands of tasks, a large heap) leaves
    more behind for the sample after it than that sample's own work, and not the same
    for every contender. Such contenders are sampled in rounds of their own, after the
    others, still in the same run.
    """
    for group in groups:
        yield from rounds(count, group)


T = TypeVar("T")


async def timed_in_loop(func: Callable[..., Awaitable[T]], *args: Any) -> tuple[T, float]:
    """Await ``func(*args)``: its result, and the seconds it took, timed in the loop.

    An async sample is timed where its caller would await it: reaching the loop (a
    portal's hop into its thread, or opening a loop with ``anyio.run``) and closing it
    are the harness's, not the contender's.
    """
    start = time.perf_counter()
    result = await func(*args)
    return result, time.perf_counter() - start


def calibrate(batch: Callable[[int], float], seconds: float, start: int = 1) -> int:
    """How many operations make one sample last about *seconds*, as pyperf calibrates.

    *batch* runs that many operations and returns the wall time they took.
    """
    loops = start
    while True:
        took = batch(loops)
        if took >= seconds or loops >= 1 << 24:
            return loops
        # Aim a little past the goal, at most 10x more per step.
        loops = max(loops + 1, int(loops * min(10.0, 1.2 * seconds / max(took, 1e-9))))


def task_cpu_seconds(pid: int) -> float:
    """CPU time that process *pid* has used so far, all its threads, in seconds.

    Read from ``/proc/PID/task/*/schedstat`` (nanoseconds), not from the clock-tick
    counters that ``psutil`` and ``os.times`` read, whose 10 ms steps would swamp a
    sample of a few milliseconds. A process that has gone counts as 0.
    """
    total = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0.0
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/schedstat", encoding="ascii") as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


def children(pid: int | None = None) -> set[int]:
    """The pids of every descendant of *pid* (this process by default), from ``/proc``."""
    root = os.getpid() if pid is None else pid
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as f:
                stat = f.read()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields follow the last ')'.
        fields = stat.rpartition(")")[2].split()
        if len(fields) > 1 and fields[1].isdigit():
            parents.setdefault(int(fields[1]), []).append(int(entry))
    found: set[int] = set()
    stack = [root]
    while stack:
        for child in parents.get(stack.pop(), []):
            if child not in found:
                found.add(child)
                stack.append(child)
    return found


@dataclass
class Clock:
    """Wall time, this process's CPU time, and the CPU time of some of its children."""

    pids: frozenset[int] = frozenset()

    def read(self) -> tuple[float, float, float]:
        """Return ``(wall, parent CPU, children CPU)`` now, in seconds."""
        return (
            time.perf_counter(),
            time.process_time(),
            sum(task_cpu_seconds(pid) for pid in self.pids),
        )


def spread(samples: Sequence[float]) -> dict[str, float]:
    """Median, extremes and quartiles of *samples* (the quartiles need two samples)."""
    ordered = sorted(samples)
    q1, q3 = (
        statistics.quantiles(ordered, n=4, method="inclusive")[::2]
        if len(ordered) > 1
        else (ordered[0], ordered[0])
    )
    return {
        "median": statistics.median(ordered),
        "min": ordered[0],
        "max": ordered[-1],
        "q1": q1,
        "q3": q3,
    }


def table(rows: Sequence[Row]) -> str:
    """Format *rows* as a plain text table: median and range of each row."""
    lines = []
    for row in rows:
        if not row.samples:
            lines.append(f"{row.title} | {row.name} | no samples")
            continue
        s = spread(row.samples)
        lines.append(
            f"{row.title} | {row.name} | {s['median']:,.4g} {row.unit} "
            f"[{s['min']:,.4g} .. {s['max']:,.4g}] n={len(row.samples)}"
        )
    return "\n".join(lines)


def report(rows: Sequence[Row], json_path: Path | None) -> None:
    """Print *rows* and, if *json_path* is given, append them to it."""
    print(table(rows), flush=True)
    if json_path is not None:
        existing: list[dict[str, object]] = []
        if json_path.exists():
            existing = json.loads(json_path.read_text(encoding="utf-8"))
        existing.extend(asdict(row) for row in rows)
        json_path.write_text(json.dumps(existing, indent=1), encoding="utf-8")
