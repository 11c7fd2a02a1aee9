"""Shared plumbing for the benchmark scripts: measuring, and one row format for all.

Every benchmark script measures procio beside its references (AnyIO, the floor on this
machine, other libraries) in one run and hands its rows to :func:`report`, which prints
a markdown table with ratios and, with ``--json PATH``, appends the rows to a JSON file
that ``benchmarks/run.py`` gathers into the full report.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Row:
    """One measured figure.

    Attributes:
        group: what is measured, e.g. ``"spawn /bin/true, sequential"``; rows of one group
            are compared with each other.
        name: who was measured, e.g. ``"procio"``, ``"anyio"`` or ``"floor: os.read loop"``.
        value: the figure itself.
        unit: its unit, e.g. ``"ms"``, ``"MB/s"``, ``"calls/s"``.
        higher_is_better: whether a larger value is the better one.
        role: ``"subject"`` for procio, ``"anyio"`` for AnyIO, ``"floor"`` for the
            best this machine can do, ``"other"`` for any other library.
    """

    group: str
    name: str
    value: float
    unit: str
    higher_is_better: bool
    role: str = "other"


def parser(description: str) -> argparse.ArgumentParser:
    """Return the argument parser every benchmark script shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that it runs")
    p.add_argument("--json", type=Path, help="append the rows to this JSON file")
    return p


def best_of(repeats: int, func: Callable[[], float]) -> float:
    """Run *func* (which returns a duration) *repeats* times and return the median."""
    return statistics.median(func() for _ in range(repeats))


def timed(func: Callable[[], object]) -> float:
    """Return how long one call of *func* took, in seconds."""
    start = time.perf_counter()
    func()
    return time.perf_counter() - start


def _ratio(row: Row, reference: Row | None) -> str:
    if reference is None or reference.value == 0 or row is reference:
        return ""
    return f"{row.value / reference.value:.2f}x"


def table(rows: Sequence[Row]) -> str:
    """Format *rows* as a markdown table with each row's ratio to the floor and to AnyIO.

    A ratio is always ``value / reference value``: for throughputs higher is better, for
    times lower is better (the unit column says which).
    """
    lines = [
        "| what | who | value | unit | vs floor | vs AnyIO |",
        "| --- | --- | ---: | --- | ---: | ---: |",
    ]
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    for group, members in groups.items():
        floor = next((r for r in members if r.role == "floor"), None)
        anyio = next((r for r in members if r.role == "anyio"), None)
        for row in members:
            lines.append(
                f"| {group} | {row.name} | {row.value:,.2f} | {row.unit} | "
                f"{_ratio(row, floor)} | {_ratio(row, anyio)} |"
            )
    return "\n".join(lines)


def report(rows: Sequence[Row], json_path: Path | None) -> None:
    """Print *rows* as a table and, if *json_path* is given, append them to it."""
    print(table(rows), flush=True)
    if json_path is not None:
        existing: list[dict[str, object]] = []
        if json_path.exists():
            existing = json.loads(json_path.read_text(encoding="utf-8"))
        existing.extend(asdict(row) for row in rows)
        json_path.write_text(json.dumps(existing, indent=2), encoding="utf-8")
