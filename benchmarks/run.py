"""Run every benchmark script in one go; print one report, and write it and its chart.

    python benchmarks/run.py [--quick] [--output docs/benchmarks.md]
                             [--chart docs/img/benchmarks.svg] [--json rows.json]
                             [--rows rows.json] [bench_text ...]

Each ``bench_*.py`` runs in a fresh interpreter, one after the other (never side by
side, so they do not disturb each other's figures). Their rows are gathered into one
report: first procio's target figures as procio's ratio to AnyIO and to the floor,
each against its target, then every row with its ratios.

- ``--output`` writes the report as markdown; into a page that has the report markers
  (``docs/benchmarks.md``), it replaces only what lies between them.
- ``--chart`` draws the ratios as an SVG chart (see ``chart.py``).
- ``--json`` keeps the raw rows; ``--rows`` reports on rows kept earlier instead of
  measuring again.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from _harness import Row, table
from chart import TARGETS, format_ratio, load_rows, render_svg, summarize

HERE = Path(__file__).resolve().parent


def measure(scripts: Sequence[Path], quick: bool) -> tuple[list[Row], list[str]]:
    """Run each script in turn; return every row they reported and the scripts that failed."""
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        failed = []
        for script in scripts:
            print(f"## {script.stem}", flush=True)
            command = [sys.executable, str(script), "--json", str(rows_file)]
            if quick:
                command.append("--quick")
            if subprocess.run(command, check=False).returncode:
                failed.append(script.stem)
        rows = load_rows(rows_file) if rows_file.exists() else []
    return rows, failed


def machine() -> str:
    """One line on where the figures come from."""
    import anyio

    try:
        from importlib.metadata import version

        anyio_version = version("anyio")
    except Exception:  # pragma: no cover - anyio imported from a bare tree
        anyio_version = getattr(anyio, "__version__", "?")
    return (
        f"{datetime.date.today().isoformat()}, {platform.system()} {platform.machine()}, "
        f"{os.cpu_count()} CPUs, Python {platform.python_version()}, AnyIO {anyio_version}"
    )


def design_table(rows: Sequence[Row]) -> str:
    """procio's target figures: procio's advantage and whether it meets its target.

    An advantage is how many times better procio did than the reference, whatever the
    unit: above 1 procio is better (faster, or less time, or less CPU).
    """
    lines = [
        "| figure | procio | vs AnyIO | vs floor | target | met |",
        "| --- | ---: | ---: | ---: | --- | :---: |",
    ]
    summaries = summarize(rows)
    for target in TARGETS:
        matching = [s for s in summaries if target in s.targets]
        if not matching:
            lines.append(f"| {target.figure}: not measured | | | | {target.wording} | - |")
            continue
        for summary in matching:
            value = summary.against(target.reference)
            met = "-" if value is None else ("yes" if value >= target.minimum else "**no**")
            lines.append(
                f"| {summary.group} | {summary.subject.value:,.2f} {summary.subject.unit} | "
                f"{_ratio(summary.vs_anyio)} | {_ratio(summary.vs_floor)} | "
                f"{target.wording} | {met} |"
            )
    return "\n".join(lines)


def _ratio(value: float | None) -> str:
    return "" if value is None else format_ratio(value)


def report(rows: Sequence[Row], provenance: str, failed: Sequence[str]) -> str:
    """The whole markdown report, opening with *provenance*: how and where it was measured."""
    parts = [
        provenance,
        "",
        "### procio's target figures",
        "",
        "*vs AnyIO* and *vs floor* say how many times better procio did than each "
        "(above 1x: procio is better, whether the unit is a time or a throughput).",
        "",
        design_table(rows),
        "",
        "### Every row",
        "",
        "Here a ratio is plainly *value / reference value*: for a time, lower is better.",
        "",
        table(rows),
    ]
    if failed:
        parts += ["", f"These scripts failed, so their rows are missing: {', '.join(failed)}."]
    return "\n".join(parts) + "\n"


BEGIN = "<!-- benchmark report: begin -->"
END = "<!-- benchmark report: end -->"


def write_report(path: Path, text: str) -> None:
    """Write *text* to *path*, or between its report markers if it has them.

    A page such as ``docs/benchmarks.md`` keeps its own prose around the markers, and
    each run replaces only what lies between them.
    """
    existing = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in existing and END in existing.partition(BEGIN)[2]:
        before, _, rest = existing.partition(BEGIN)
        after = rest.partition(END)[2]
        text = f"{before}{BEGIN}\n{text}{END}{after}"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that all run")
    p.add_argument("--output", type=Path, help="also write the markdown report here")
    p.add_argument("--chart", type=Path, help="draw the ratios as an SVG chart here")
    p.add_argument("--json", type=Path, help="keep the raw rows in this JSON file")
    p.add_argument("--rows", type=Path, help="report on these saved rows; measure nothing")
    p.add_argument("only", nargs="*", help="run only these scripts (e.g. bench_text)")
    args = p.parse_args()

    failed: list[str] = []
    if args.rows:
        rows = load_rows(args.rows)
    else:
        scripts = sorted(HERE.glob("bench_*.py"))
        if args.only:
            unknown = set(args.only) - {s.stem for s in scripts}
            if unknown:
                p.error(f"no such benchmark script: {', '.join(sorted(unknown))}")
            scripts = [s for s in scripts if s.stem in args.only]
        rows, failed = measure(scripts, args.quick)

    command = shlex.join(["python", "benchmarks/run.py", *(["--quick"] if args.quick else [])])
    if args.only:
        command += " " + shlex.join(args.only)
    if args.rows:
        provenance = f"Rows read from `{args.rows}`, saved by an earlier run with `--json`."
    else:
        provenance = f"Measured with `{command}` on {machine()}."
    text = report(rows, provenance, failed)
    print("\n# Report\n\n" + text, flush=True)
    if args.output:
        write_report(args.output, text)
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2), encoding="utf-8")
    if args.chart:
        args.chart.parent.mkdir(parents=True, exist_ok=True)
        args.chart.write_text(render_svg(rows, machine()), encoding="utf-8")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
