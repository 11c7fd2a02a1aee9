"""Draw the results file as an SVG chart of procio's ratios to AnyIO and to the floor.

``python benchmarks/chart.py docs/img/benchmarks.svg`` (or ``run.py --chart``) draws one
group of bars per figure that has a procio row: how many times better procio does than
AnyIO, and than the floor on the same machine, as the median of the per-round ratios
with a whisker over their range, on a logarithmic scale centred on parity, with the
target marked where there is one. Dask's figures are left out: they measure a cluster
round trip, another kind of thing, and have their own table.

The chart is SVG written by hand: it needs no plotting library (so the benchmark
environment and CI need nothing extra), stays sharp at any size, and diffs as text.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from figures import RESULTS, TABLE_SECTIONS, TARGETS, Results, Target, load, paired_ratio, ratio

format_ratio = ratio


@dataclass(frozen=True)
class Advantage:
    """How many times better procio did than a reference: above 1, procio is better."""

    median: float
    low: float
    high: float


@dataclass(frozen=True)
class Summary:
    """procio's standing in one figure.

    Attributes:
        group: the figure's title.
        vs_anyio: procio's advantage over AnyIO, if the figure has an AnyIO row.
        vs_floor: procio's advantage over the floor, if the figure has a floor row.
        targets: the targets of this figure, with their bounds as advantages.
    """

    group: str
    vs_anyio: Advantage | None
    vs_floor: Advantage | None
    targets: tuple[tuple[Target, float], ...]

    def against(self, reference: str) -> Advantage | None:
        """Return the advantage over ``"anyio"`` or ``"floor"``."""
        return self.vs_anyio if reference == "anyio" else self.vs_floor


def _advantage(figure: dict[str, Any], reference: str) -> Advantage | None:
    rows = figure["rows"]
    subject = next((r for r in rows if r["role"] == "subject"), None)
    other = next((r for r in rows if r["role"] == reference), None)
    if subject is None or other is None:
        return None
    spread = paired_ratio(subject, other)
    if spread is None or spread["min"] <= 0:
        return None
    if figure["higher_is_better"]:
        return Advantage(spread["median"], spread["min"], spread["max"])
    return Advantage(1 / spread["median"], 1 / spread["max"], 1 / spread["min"])


def summarize(results: Results) -> list[Summary]:
    """One :class:`Summary` per figure (but Dask's) with procio and a reference row.

    In the results file's order, but for the sections shown as one table of their own
    (many tasks), which come last, as in the tables: their script may run first.
    """
    summaries = []
    for figure in sorted(results["figures"], key=lambda f: f["section"] in TABLE_SECTIONS):
        if figure["section"] == "dask":
            continue
        vs_anyio, vs_floor = _advantage(figure, "anyio"), _advantage(figure, "floor")
        if vs_anyio is None and vs_floor is None:
            continue
        targets = tuple(
            (t, t.bound if figure["higher_is_better"] else 1 / t.bound)
            for t in TARGETS
            if t.figure == figure["key"] and t.reference in ("anyio", "floor")
        )
        summaries.append(Summary(figure["title"], vs_anyio, vs_floor, targets))
    return summaries


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
        for v in (summary.vs_anyio, summary.vs_floor):
            if v is not None:
                values += [v.low, v.high]
        values += [bound for _, bound in summary.targets]
    low = 2.0 ** math.floor(math.log2(min(values) / 1.1))
    high = 2.0 ** math.ceil(math.log2(max(values) * 1.1))
    # Beyond these, a bar runs to the edge and its label still gives the figure.
    return min(max(low, 1 / 64), 0.5), max(min(high, 64.0), 2.0)


def _tick_label(value: float) -> str:
    return f"{value:g}x" if value >= 1 else f"1/{1 / value:g}x"


def _shorten(text: str, limit: int = 62) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def render_svg(results: Results) -> str:
    """Draw *results* as an SVG document (a string)."""
    summaries = summarize(results)
    machine = results["machine"]
    subtitle = (
        f"{'QUICK RUN, not to be read: ' if results.get('quick') else ''}"
        f"{machine['date']}, {machine['python']}, {machine['cpus']} CPUs; "
        "bar: median of the per-round ratios, whisker: their range"
    )
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
        ("anyio", f"vs AnyIO {machine['anyio']}"),
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
            advantage = summary.against(role)
            y = top + 4 + slot * (BAR + 3)
            if advantage is None:
                continue
            value = advantage.median
            start, end = sorted((x(1.0), x(value)))
            out.append(
                f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 1.5):.1f}" '
                f'height="{BAR}" fill="{COLOURS[role]}"><title>'
                f"{escape(summary.group)}: {format_ratio(value)} vs {role}</title></rect>"
            )
            out.append(
                f'<line x1="{x(advantage.low):.1f}" y1="{y + BAR / 2}" '
                f'x2="{x(advantage.high):.1f}" y2="{y + BAR / 2}" stroke="#111" '
                f'stroke-width="1"><title>range over rounds: {format_ratio(advantage.low)} '
                f"to {format_ratio(advantage.high)}</title></line>"
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
            for target, bound in summary.targets:
                if target.reference == role:
                    tx = x(bound)
                    out.append(
                        f'<line x1="{tx:.1f}" y1="{y - 2}" x2="{tx:.1f}" y2="{y + BAR + 2}" '
                        f'stroke="{TARGET_COLOUR}" stroke-width="2.5"><title>target: '
                        f"{escape(target.wording)}</title></line>"
                    )
    if not summaries:
        out.append(f'<text x="{PLOT_LEFT}" y="{TOP + 20}" fill="#555">no rows to compare</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main() -> int:
    """Draw the chart of a results file into the SVG file named."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("svg", type=Path, help="the SVG file to write")
    p.add_argument("--results", type=Path, default=RESULTS, help="the results file")
    args = p.parse_args()
    args.svg.parent.mkdir(parents=True, exist_ok=True)
    args.svg.write_text(render_svg(load(args.results)), encoding="utf-8")
    print(f"drew {args.svg}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
