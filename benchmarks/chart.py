"""Sum up benchmark rows as ratios, and draw them as an SVG chart.

``python benchmarks/chart.py ROWS.json [--output docs/img/benchmarks.svg]`` reads the
rows that ``run.py --json`` (or any ``bench_*.py --json``) wrote, and draws one group of
bars per measured figure: how many times better procio does than AnyIO, and than the
floor on the same machine, on a logarithmic scale centred on parity, with the target of
the design target marked where there is one.

The chart is SVG written by hand: it needs no plotting library (so the benchmark
environment and CI need nothing extra), stays sharp at any size, and diffs as text.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from xml.sax.saxutils import escape

from _harness import Row


@dataclass(frozen=True)
class Target:
    """One of procio's target figures, as a bound on procio's advantage over a reference.

    Attributes:
        figure: the figure, in the words of the design targets.
        pattern: a regular expression that finds the figure's group among the rows.
        reference: ``"anyio"`` or ``"floor"``.
        minimum: the least advantage that meets the target (see :func:`advantage`).
        wording: the target as the design states it.
    """

    figure: str
    pattern: str
    reference: str
    minimum: float
    wording: str


# The design targets, each bound turned into "procio is at least this many times better".
# The worker figures are those of local worker processes: groups that measure another
# backend (such as Dask) say so in their name and are not held to these targets.
_LOCAL = r"^(?!.*\bdask\b)"
TARGETS = (
    Target(
        "spawn and reap, sequential",
        r"^spawn .*sequential.*wall",
        "floor",
        1 / 1.15,
        "≤ 1.15x the floor's time",
    ),
    Target(
        "spawn and reap: parent CPU",
        r"^spawn .*sequential.*CPU",
        "anyio",
        2.0,
        "≤ 0.5x AnyIO's parent CPU",
    ),
    Target(
        "read 256 MiB of stdout",
        r"^read .* of stdout",
        "floor",
        0.9,
        "≥ 0.9x the floor's throughput",
    ),
    Target("decode ASCII output", r"^decode ASCII", "anyio", 2.0, "≥ 2x AnyIO's throughput"),
    Target("worker round trip", _LOCAL + r".*round trip", "anyio", 2.0, "≥ 2x AnyIO's calls/s"),
    Target(
        "worker round trip", _LOCAL + r".*round trip", "floor", 0.8, "≥ 0.8x the floor's calls/s"
    ),
    Target("32 MiB bytes echoed", _LOCAL + r".*echo", "anyio", 5.0, "≥ 5x AnyIO's throughput"),
    Target("cold start", _LOCAL + r".*cold start", "anyio", 2.0, "≤ 0.5x AnyIO's time"),
)


def advantage(subject: Row, reference: Row) -> float:
    """How many times better *subject* did than *reference*: above 1 means better.

    For a throughput it is ``subject / reference``; for a time, ``reference / subject``.
    """
    if subject.higher_is_better:
        return subject.value / reference.value
    return reference.value / subject.value


@dataclass(frozen=True)
class Summary:
    """procio's standing in one group of rows.

    Attributes:
        group: the group's name.
        subject: procio's row.
        vs_anyio: procio's advantage over AnyIO, if the group has an AnyIO row.
        vs_floor: procio's advantage over the floor, if the group has a floor row.
        targets: the design targets that apply to this group.
    """

    group: str
    subject: Row
    vs_anyio: float | None
    vs_floor: float | None
    targets: tuple[Target, ...]

    def against(self, reference: str) -> float | None:
        """Return the advantage over ``"anyio"`` or ``"floor"``."""
        return self.vs_anyio if reference == "anyio" else self.vs_floor


def summarize(rows: Sequence[Row]) -> list[Summary]:
    """One :class:`Summary` per group that has a procio row and AnyIO's or the floor's."""
    groups: dict[str, list[Row]] = {}
    for row in rows:
        groups.setdefault(row.group, []).append(row)
    summaries = []
    for group, members in groups.items():
        by_role = {row.role: row for row in reversed(members)}  # the first of each role
        subject = by_role.get("subject")
        if subject is None or subject.value <= 0:
            continue
        ratios = {
            role: advantage(subject, by_role[role])
            for role in ("anyio", "floor")
            if role in by_role and by_role[role].value > 0
        }
        if not ratios:
            continue
        targets = tuple(t for t in TARGETS if re.search(t.pattern, group, re.IGNORECASE))
        summaries.append(Summary(group, subject, ratios.get("anyio"), ratios.get("floor"), targets))

    # The target figures first, in their order; then the rest as the scripts gave them,
    # other backends' figures last.
    def rank(summary: Summary) -> int:
        if not re.search(_LOCAL, summary.group, re.IGNORECASE):
            return len(TARGETS) + 1
        return min((TARGETS.index(t) for t in summary.targets), default=len(TARGETS))

    return sorted(summaries, key=rank)


def format_ratio(value: float) -> str:
    if value < 0.1:
        return f"{value:.3f}x"
    return f"{value:.2f}x" if value < 10 else f"{value:.1f}x"


# -- drawing ---------------------------------------------------------------------------

WIDTH = 980
LABEL_WIDTH = 400
PLOT_LEFT = LABEL_WIDTH + 20
PLOT_RIGHT = WIDTH - 70
TOP = 86
BAR = 13
BLOCK = 2 * BAR + 22
COLOURS = {"anyio": "#2f6fd6", "floor": "#8d939c"}
TARGET_COLOUR = "#c2410c"


def _scale(summaries: Sequence[Summary]) -> tuple[float, float]:
    """The x axis's range: powers of two around every ratio and target, with 1x inside."""
    values = [1.0]
    for summary in summaries:
        values += [v for v in (summary.vs_anyio, summary.vs_floor) if v is not None]
        values += [t.minimum for t in summary.targets]
    low = 2.0 ** math.floor(math.log2(min(values) / 1.1))
    high = 2.0 ** math.ceil(math.log2(max(values) * 1.1))
    # Beyond these, a bar runs to the edge and its label still gives the figure.
    return min(max(low, 1 / 64), 0.5), max(min(high, 64.0), 2.0)


def _tick_label(value: float) -> str:
    return f"{value:g}x" if value >= 1 else f"1/{1 / value:g}x"


def _shorten(text: str, limit: int = 62) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(rows: Sequence[Row], subtitle: str = "") -> str:
    """Draw *rows* as an SVG document (a string)."""
    summaries = summarize(rows)
    low, high = _scale(summaries) if summaries else (0.5, 2.0)
    span = math.log2(high) - math.log2(low)

    def x(value: float) -> float:
        value = min(max(value, low), high)
        return PLOT_LEFT + (PLOT_RIGHT - PLOT_LEFT) * (math.log2(value) - math.log2(low)) / span

    height = TOP + BLOCK * max(len(summaries), 1) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="system-ui, sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{height}" fill="#ffffff"/>',
        '<text x="20" y="26" font-size="16" font-weight="600" fill="#111">'
        "How many times better procio does than AnyIO and than the floor</text>",
        f'<text x="20" y="46" fill="#555">{escape(subtitle)}</text>',
    ]
    legend_y = 66
    legend = [
        ("anyio", "vs AnyIO 4.16"),
        ("floor", "vs the floor on this machine"),
    ]
    legend_x = 20
    for role, text in legend:
        out.append(
            f'<rect x="{legend_x}" y="{legend_y - 10}" width="14" height="10" '
            f'fill="{COLOURS[role]}"/>'
        )
        out.append(f'<text x="{legend_x + 20}" y="{legend_y}" fill="#333">{text}</text>')
        legend_x += 40 + 7 * len(text)
    out.append(
        f'<line x1="{legend_x}" y1="{legend_y - 12}" x2="{legend_x}" y2="{legend_y + 2}" '
        f'stroke="{TARGET_COLOUR}" stroke-width="2.5"/>'
    )
    out.append(f'<text x="{legend_x + 8}" y="{legend_y}" fill="#333">target</text>')
    legend_x += 170
    out.append(
        f'<text x="{legend_x}" y="{legend_y}" fill="#555">'
        "right of 1x: procio is better; logarithmic scale</text>"
    )

    bottom = TOP + BLOCK * max(len(summaries), 1)
    tick = low
    while tick <= high * 1.0001:
        tx = x(tick)
        weight = "#444" if tick == 1 else "#e3e5e8"
        out.append(
            f'<line x1="{tx:.1f}" y1="{TOP - 6}" x2="{tx:.1f}" y2="{bottom}" '
            f'stroke="{weight}" stroke-width="{1.5 if tick == 1 else 1}"/>'
        )
        label = _tick_label(tick)
        out.append(
            f'<text x="{tx:.1f}" y="{bottom + 16}" text-anchor="middle" fill="#555">{label}</text>'
        )
        tick *= 2

    for index, summary in enumerate(summaries):
        top = TOP + BLOCK * index
        out.append(
            f'<text x="{LABEL_WIDTH}" y="{top + BAR + 6}" text-anchor="end" fill="#111">'
            f"<title>{escape(summary.group)}</title>{escape(_shorten(summary.group))}</text>"
        )
        for slot, role in enumerate(("anyio", "floor")):
            value = summary.against(role)
            y = top + 4 + slot * (BAR + 3)
            if value is None:
                continue
            start, end = sorted((x(1.0), x(value)))
            out.append(
                f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 1.5):.1f}" '
                f'height="{BAR}" fill="{COLOURS[role]}"><title>'
                f"{escape(summary.group)}: {format_ratio(value)} vs {role}</title></rect>"
            )
            colour = "#222"
            if value >= 1:
                text_x, anchor = end + 4, "start"
            elif start - PLOT_LEFT > 44:
                text_x, anchor = start - 4, "end"
            else:  # no room left of the bar: write the figure inside it
                text_x, anchor, colour = start + 4, "start", "#fff"
            out.append(
                f'<text x="{text_x:.1f}" y="{y + BAR - 2}" text-anchor="{anchor}" '
                f'font-size="11" fill="{colour}">{format_ratio(value)}</text>'
            )
            for target in summary.targets:
                if target.reference == role:
                    tx = x(target.minimum)
                    out.append(
                        f'<line x1="{tx:.1f}" y1="{y - 2}" x2="{tx:.1f}" y2="{y + BAR + 2}" '
                        f'stroke="{TARGET_COLOUR}" stroke-width="2.5"><title>target: '
                        f"{escape(target.wording)}</title></line>"
                    )
    if not summaries:
        out.append(f'<text x="{PLOT_LEFT}" y="{TOP + 20}" fill="#555">no rows to compare</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def load_rows(path: Path) -> list[Row]:
    """Read the rows a benchmark script wrote with ``--json``."""
    return [Row(**row) for row in json.loads(path.read_text(encoding="utf-8"))]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("rows", type=Path, help="the rows, as written by run.py --json")
    p.add_argument("--output", type=Path, default=Path("benchmarks.svg"), help="the SVG file")
    p.add_argument("--subtitle", default="", help="a line under the title")
    args = p.parse_args()
    args.output.write_text(render_svg(load_rows(args.rows), args.subtitle), encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
