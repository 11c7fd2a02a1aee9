"""Render the docs' figure blocks from the one results file.

    python benchmarks/figures.py [--results benchmarks/results.json] [--check] PAGE ...

``benchmarks/run.py`` measures and writes the results file; this module is the only way
a figure gets from it into a page. A page marks a block with

    <!-- figures: round-trip echo -->
    ...anything; replaced by each run...
    <!-- /figures -->

naming one or more blocks of :data:`BLOCKS` or :data:`TABLE_BLOCKS` (several figures
in one table), and this script rewrites what lies between the markers (``--check``
only reports the pages that differ, and fails). It reads the results file and nothing
else: no measuring, and only the standard library, so that the test suite can run it.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results.json"
SCHEMA = 1

Results = dict[str, Any]
Figure = dict[str, Any]
FigureRow = dict[str, Any]


@dataclass(frozen=True)
class Target:
    """One of procio's targets: a bound on procio's ratio to a reference row.

    The ratio is always procio's value divided by the reference's (for a time, lower
    is better; for a throughput, higher), taken per round and summed up as a median and
    a range.

    Attributes:
        figure: the figure's key in the results.
        reference: the reference row's role: ``"anyio"`` or ``"floor"``.
        op: ``">="`` or ``"<="``.
        bound: the bound on the ratio.
        wording: the target, in words.
    """

    figure: str
    reference: str
    op: str
    bound: float
    wording: str

    def met(self, ratio: float) -> bool:
        """Whether *ratio* meets this target."""
        return ratio >= self.bound if self.op == ">=" else ratio <= self.bound


# The targets of the design, in its order. Spawn targets are per Python version: the
# bound is tighter from Python 3.13 on.
TARGETS: tuple[Target, ...] = (
    Target(
        "spawn-wall-py3.11",
        "floor",
        "<=",
        1.15,
        "wall ≤ 1.15x posix_spawn + waitpid (Python 3.11)",
    ),
    Target(
        "spawn-wall-py3.13",
        "floor",
        "<=",
        1.10,
        "wall ≤ 1.10x posix_spawn + waitpid (Python 3.13)",
    ),
    Target("spawn-cpu-py3.11", "anyio", "<=", 0.5, "parent CPU ≤ 0.5x AnyIO's (Python 3.11)"),
    Target("read", "floor", ">=", 0.9, "≥ 0.9x the blocking os.read floor"),
    Target("decode-ascii", "floor", ">=", 0.9, "≥ 0.9x blocking read + incremental decoder"),
    Target("round-trip", "anyio", ">=", 2.0, "≥ 2x AnyIO's calls/s"),
    Target("round-trip", "floor", ">=", 0.5, "≥ 0.5x the busy-polling pipe ping-pong"),
    Target("sporadic-cpu", "anyio", "<=", 1.0, "parent + worker CPU per call ≤ 1.0x AnyIO's"),
    Target("echo", "anyio", ">=", 3.0, "≥ 3x AnyIO's MB/s"),
    Target("cold-start", "anyio", "<=", 0.5, "≤ 0.5x AnyIO's time, trivial `__main__`"),
    Target("cold-start-heavy", "anyio", "<=", 0.5, "≤ 0.5x AnyIO's time, heavy `__main__`"),
    Target("map-tiny", "other", ">=", 1.5, "map of 20,000 tiny calls ≥ 1.5x the best peer"),
    Target("cpu-bound", "floor", "<=", 1.1, "64 calls of ~10 ms within 10% of ideal"),
    Target("interpreter-round-trip", "anyio", ">=", 2.0, "subinterpreter round trip ≥ 2x AnyIO"),
    Target(
        "interpreter-cold-start",
        "other",
        "<=",
        0.5,
        "subinterpreter cold start ≤ 0.5x a new worker process's",
    ),
)

# Block name -> figure keys (shell-style patterns), in the order they are shown.
BLOCKS: dict[str, tuple[str, ...]] = {
    "spawn": ("spawn-wall-*", "spawn-cpu-*", "spawn-concurrent"),
    "read": ("read",),
    "decode": ("decode-*",),
    "lines": ("lines", "lines-*"),
    "round-trip": ("round-trip", "round-trip-cpu-parent", "round-trip-cpu-worker"),
    "echo": ("echo",),
    "sporadic": ("sporadic-cpu", "sporadic-cpu-parent", "sporadic-cpu-worker"),
    "concurrent": ("concurrent",),
    "cold-start": ("cold-start", "cold-start-heavy"),
    "pipe-size": ("pipe-size-*",),
    "dask": ("dask-*",),
    "interpreters": ("interpreter-*",),
}
# Blocks drawn as one table of several figures (row, contender, median, range, ratio),
# each row's ratio taken to its figure's reference (see :func:`reference_row`).
TABLE_BLOCKS: dict[str, tuple[str, ...]] = {
    "many-tasks": ("map-tiny", "map-tiny-py*", "cpu-bound", "cpu-bound-parent", "stream"),
}
# Blocks that are not figure tables.
SPECIAL_BLOCKS = ("machine", "targets", "all")
SECTIONS = {
    "process": "Processes",
    "text": "Text",
    "workers": "Worker processes",
    "many-tasks": "Many tasks",
}
# Sections that the "all" block shows as one table, as their own block does.
TABLE_SECTIONS = {"many-tasks": "many-tasks"}

BEGIN = re.compile(r"<!-- figures: ([a-z0-9 -]+?) -->\n")
END = "<!-- /figures -->"


class FiguresError(Exception):
    """A page's figure block is malformed, or names a block that does not exist."""


# -- numbers -------------------------------------------------------------------------


def number(value: float) -> str:
    """A figure, with as many digits as a noisy measurement deserves."""
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(value: float) -> str:
    """A ratio, such as ``2.47x``."""
    if value >= 10:
        return f"{value:.1f}x"
    if value < 0.1:
        return f"{value:.3f}x"
    return f"{value:.2f}x"


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2


def paired_ratio(subject: FigureRow, reference: FigureRow) -> dict[str, float] | None:
    """``subject / reference``: median and range over the rounds, paired by round.

    Samples of one round were taken side by side, so each round gives one ratio, and
    the range is that of those ratios. Rows with different sample counts cannot be
    paired: then the median is the ratio of the medians and the range the widest.
    """
    a, b = subject["samples"], reference["samples"]
    if not a or not b or min(b) <= 0:
        return None
    if len(a) == len(b):
        values = [x / y for x, y in zip(a, b, strict=True)]
        return {"median": _median(values), "min": min(values), "max": max(values)}
    return {
        "median": _median(a) / _median(b),
        "min": min(a) / max(b),
        "max": max(a) / min(b),
    }


def _by_role(figure: Figure, role: str) -> FigureRow | None:
    return next((row for row in figure["rows"] if row["role"] == role), None)


def best_peer(figure: Figure) -> FigureRow | None:
    """The best of the rows that are neither procio's headline row nor a floor.

    AnyIO's row and the other libraries' rows compete; the best is the one with the
    best median (the highest for a rate, the lowest for a time).
    """
    peers = [row for row in figure["rows"] if row["role"] in ("anyio", "other")]
    if not peers:
        return None
    pick = max if figure["higher_is_better"] else min
    best: FigureRow = pick(peers, key=lambda row: float(row["median"]))
    return best


def reference_row(figure: Figure) -> FigureRow | None:
    """What a figure's rows are compared with in a table block: its floor if it has
    one (an ideal, say), else its best peer (see :func:`best_peer`)."""
    return _by_role(figure, "floor") or best_peer(figure)


def evaluate_targets(figures: Sequence[Figure]) -> list[dict[str, Any]]:
    """Each target with procio's ratio to its reference, and whether it is met."""
    by_key = {figure["key"]: figure for figure in figures}
    evaluated = []
    for target in TARGETS:
        entry: dict[str, Any] = {
            "figure": target.figure,
            "reference": target.reference,
            "op": target.op,
            "bound": target.bound,
            "wording": target.wording,
            "ratio": None,
            "met": None,
        }
        figure = by_key.get(target.figure)
        subject = figure and _by_role(figure, "subject")
        if target.reference == "other":  # "the best peer": the best of the others
            reference = figure and best_peer(figure)
        else:
            reference = figure and _by_role(figure, target.reference)
        if subject and reference:
            spread = paired_ratio(subject, reference)
            if spread is not None:
                entry["ratio"] = spread
                entry["met"] = target.met(spread["median"])
                entry["range_meets"] = target.met(spread["min"]) and target.met(spread["max"])
        evaluated.append(entry)
    return evaluated


# -- rendering -----------------------------------------------------------------------


def load(path: Path = RESULTS) -> Results:
    """Read a results file written by ``run.py``."""
    results: Results = json.loads(path.read_text(encoding="utf-8"))
    if results.get("schema") != SCHEMA:
        raise FiguresError(f"{path}: not a results file of schema {SCHEMA}")
    return results


def _quick_warning(results: Results) -> list[str]:
    if not results.get("quick"):
        return []
    return [
        "> **Quick run:** sizes too small to mean anything. These rows only show that "
        "every benchmark runs; the figures themselves are not to be read.",
        "",
    ]


def render_machine(results: Results) -> str:
    """Where and how the results were measured."""
    m = results["machine"]
    before, after = m["load_before"], m["load_after"]
    lines = [
        f"Measured with `{results['command']}` on {m['date']}: {m['platform']}, "
        f"{m['cpus']} CPUs ({m['cpu_model']}), {m['python']}, "
        f"AnyIO {m['anyio']}, pyperf {m['pyperf']}; "
        f"{results['processes']} fresh interpreter{'' if results['processes'] == 1 else 's'} "
        "per script, interleaved rounds in each.",
        "",
        f"How busy the machine was: load average (1, 5, 15 min) "
        f"{', '.join(f'{v:.2f}' for v in before)} before the run and "
        f"{', '.join(f'{v:.2f}' for v in after)} after; all CPUs were "
        f"{m['busy_percent']:.0f}% busy during the run, this run included.",
    ]
    if results.get("other_pythons"):
        lines += ["", "Spawn rows also measured on: " + ", ".join(results["other_pythons"]) + "."]
    if results.get("failed"):
        lines += ["", "These scripts failed, so their rows are missing: "]
        lines[-1] += ", ".join(results["failed"]) + "."
    return "\n".join(lines)


def render_targets(results: Results) -> str:
    """The targets table: each target with procio's ratio, its range, met or not."""
    lines = [
        "| figure | target | procio's ratio (median) | range over rounds | met |",
        "| --- | --- | ---: | ---: | :---: |",
    ]
    titles = {figure["key"]: figure["title"] for figure in results["figures"]}
    for entry in results["targets"]:
        title = titles.get(entry["figure"], entry["figure"])
        spread = entry["ratio"]
        if spread is None:
            lines.append(f"| {title} | {entry['wording']} | not measured | | - |")
            continue
        met = "met" if entry["met"] else "**not met**"
        if not entry.get("range_meets", entry["met"]) and entry["met"]:
            met += " (not in every round)"
        lines.append(
            f"| {title} | {entry['wording']} | {ratio(spread['median'])} | "
            f"{ratio(spread['min'])}\u2013{ratio(spread['max'])} | {met} |"
        )
    return "\n".join(lines)


def render_figure(figure: Figure) -> str:
    """One figure as a table: each row's median, range and ratios to AnyIO and the floor."""
    better = "higher" if figure["higher_is_better"] else "lower"
    rows = figure["rows"]
    n = max((len(row["samples"]) for row in rows), default=0)
    lines = [
        f"**{figure['title']}** ({figure['unit']}, {better} is better; "
        f"median and range of {n} sample{'' if n == 1 else 's'})",
        "",
        *([figure["note"], ""] if figure.get("note") else []),
        "| who | median | range | vs AnyIO | vs floor |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    anyio = _by_role(figure, "anyio")
    floor = _by_role(figure, "floor")
    for row in rows:
        cells = []
        for reference in (anyio, floor):
            spread = (
                None if reference is None or reference is row else (paired_ratio(row, reference))
            )
            cells.append("" if spread is None else ratio(spread["median"]))
        lines.append(
            f"| {row['name']} | {number(row['median'])} | "
            f"{number(row['min'])}\u2013{number(row['max'])} | {cells[0]} | {cells[1]} |"
        )
    return "\n".join(lines)


def _samples_phrase(rows: Sequence[FigureRow]) -> str:
    counts = sorted({len(row["samples"]) for row in rows})
    if not counts:
        return "no samples"
    many = "" if counts[-1] == 1 else "s"
    if len(counts) == 1:
        return f"{counts[0]} sample{many}"
    return f"{counts[0]} to {counts[-1]} samples"


def render_table(figures: Sequence[Figure]) -> str:
    """Several figures as one table: row, contender, median, range, ratio.

    Each contender's ratio is its value divided by its figure's reference (its floor,
    else its best peer: :func:`reference_row`), per round, as a median; the reference
    itself says so. Each figure's note follows the table.
    """
    every_row = [row for figure in figures for row in figure["rows"]]
    lines = [
        f"Median and range of {_samples_phrase(every_row)} per contender; *ratio* is "
        "the contender's value divided by its row's reference, per round, as a median.",
        "",
        "| row | contender | median | range | ratio |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    notes = []
    for figure in figures:
        better = "higher" if figure["higher_is_better"] else "lower"
        label = f"{figure['title']} ({figure['unit']}, {better} is better)"
        reference = reference_row(figure)
        for index, row in enumerate(figure["rows"]):
            if row is reference:
                cell = "reference"
            else:
                spread = None if reference is None else paired_ratio(row, reference)
                cell = "" if spread is None else ratio(spread["median"])
            lines.append(
                f"| {label if index == 0 else ''} | {row['name']} | {number(row['median'])} | "
                f"{number(row['min'])}\u2013{number(row['max'])} | {cell} |"
            )
        if figure.get("note"):
            notes.append(f"*{figure['title']}:* {figure['note']}")
    return "\n\n".join(["\n".join(lines), *notes])


def figures_for(results: Results, patterns: Sequence[str]) -> list[Figure]:
    """The figures whose keys match *patterns*, in the patterns' order."""
    chosen: list[Figure] = []
    for pattern in patterns:
        for figure in results["figures"]:
            if fnmatch.fnmatchcase(figure["key"], pattern) and figure not in chosen:
                chosen.append(figure)
    return chosen


def render_all(results: Results) -> str:
    """Every figure, by section, Dask's last and on its own."""
    parts: list[str] = []
    for section, heading in [*SECTIONS.items(), ("dask", "Dask (a group of its own)")]:
        figures = [f for f in results["figures"] if f["section"] == section]
        if not figures:
            continue
        parts += [f"#### {heading}", ""]
        if section in TABLE_SECTIONS:
            chosen = figures_for(results, TABLE_BLOCKS[TABLE_SECTIONS[section]])
            rest = [figure for figure in figures if figure not in chosen]
            parts += [render_table(chosen), ""] if chosen else []
            figures = rest
        for figure in figures:
            parts += [render_figure(figure), ""]
    return "\n".join(parts).rstrip("\n")


def render_block(names: Sequence[str], results: Results) -> str:
    """The text of a block that names *names*; from a quick run, it says so first."""
    parts: list[str] = ["\n".join(_quick_warning(results)).strip()] if results.get("quick") else []
    for name in names:
        if name == "machine":
            parts.append(render_machine(results))
        elif name == "targets":
            parts.append(render_targets(results))
        elif name == "all":
            parts.append(render_all(results))
        elif name in BLOCKS:
            figures = figures_for(results, BLOCKS[name])
            if not figures:
                parts.append(f"*Not measured in this run: {name}.*")
            parts += [render_figure(figure) for figure in figures]
        elif name in TABLE_BLOCKS:
            figures = figures_for(results, TABLE_BLOCKS[name])
            parts.append(
                render_table(figures) if figures else f"*Not measured in this run: {name}.*"
            )
        else:
            known = ", ".join([*SPECIAL_BLOCKS, *BLOCKS, *TABLE_BLOCKS])
            raise FiguresError(f"no figure block named {name!r} (known: {known})")
    return "\n\n".join(parts)


@dataclass(frozen=True)
class Block:
    """One marked block of a page: where its content lies, and what it names."""

    names: tuple[str, ...]
    start: int
    end: int


FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.MULTILINE | re.DOTALL)


def _hide_code(text: str) -> str:
    """*text* with its fenced code blocks blanked out (same length): markers shown as
    examples in code are not blocks."""
    return FENCE.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), text)


def blocks(text: str) -> list[Block]:
    """The marked blocks of *text*, in order; raise :class:`FiguresError` if malformed."""
    text = _hide_code(text)
    found = []
    position = 0
    while match := BEGIN.search(text, position):
        end = text.find(END, match.end())
        nested = BEGIN.search(text, match.end())
        if end < 0 or (nested is not None and nested.start() < end):
            raise FiguresError(f"a figures block opened at offset {match.start()} is not closed")
        found.append(Block(tuple(match.group(1).split()), match.end(), end))
        position = end + len(END)
    if text.count(END) != len(found):
        raise FiguresError("a '<!-- /figures -->' closes no block")
    return found


def render_page(text: str, results: Results) -> str:
    """*text* with every marked block rendered afresh from *results*."""
    out = []
    position = 0
    for block in blocks(text):
        out += [text[position : block.start], render_block(block.names, results), "\n"]
        position = block.end
    out.append(text[position:])
    return "".join(out)


def outside_blocks(text: str) -> str:
    """*text* without the content of its marked blocks (the markers stay)."""
    out = []
    position = 0
    for block in blocks(text):
        out.append(text[position : block.start])
        position = block.end
    out.append(text[position:])
    return "".join(out)


# A number with a unit of measured figures, or a ratio such as "2.5x". Sizes (MiB, KiB)
# are inputs, not figures, and are not matched.
FIGURE_LIKE = re.compile(
    r"(?<![\w.])\d[\d,]*(?:\.\d+)?\s?"
    r"(?:(?:calls|spawns|lines)/s|[MGK]B/s|µs|us|ms|s\b|x\b|\u00d7)"
)


def stray_figures(text: str, settings: Sequence[str] = ()) -> list[str]:
    """Figure-like numbers of *text* outside its marked blocks.

    *settings* are phrases that look like figures but are settings (``"200 µs"`` of
    polling, say); they are not reported.
    """
    outside = outside_blocks(text)
    for phrase in settings:
        outside = outside.replace(phrase, "")
    return [match.group(0) for match in FIGURE_LIKE.finditer(outside)]


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("pages", nargs="*", type=Path, help="pages whose blocks to rewrite")
    p.add_argument("--results", type=Path, default=RESULTS, help="the results file")
    p.add_argument("--check", action="store_true", help="change nothing; fail if out of date")
    args = p.parse_args()
    results = load(args.results)
    stale = []
    for page in args.pages:
        text = page.read_text(encoding="utf-8")
        new = render_page(text, results)
        if new != text:
            stale.append(str(page))
            if not args.check:
                page.write_text(new, encoding="utf-8")
    if args.check and stale:
        print("out of date: " + ", ".join(stale), file=sys.stderr)
        return 1
    for path in stale:
        print(f"rewrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
