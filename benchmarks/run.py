"""Run every benchmark, write the one results file, and render the pages from it.

    python benchmarks/run.py [--quick] [--processes N] [--also-python PYTHON ...]
                             [--results benchmarks/results.json] [--pyperf PATH]
                             [--output PAGE ...] [--chart docs/img/benchmarks.svg]
                             [--rows RESULTS] [--only GROUP ...] [bench_text ...]

Each ``bench_*.py`` runs in ``--processes`` fresh interpreters, one after the other
(never side by side, so that they do not disturb each other's figures); inside each,
the contenders of a figure are sampled in interleaved rounds (see ``_harness``). The
samples of all processes are joined, row by row, into the results file: every row
with its samples, median, range and quartiles, the machine it ran on and how busy that
was, and the targets evaluated. ``--also-python`` runs the sequential spawn rows and the
map of tiny calls again on another interpreter (one with procio and AnyIO installed),
whose figures carry its version, and the subinterpreter rows (``bench_interpreters``,
Python 3.13+), which no older interpreter can measure.

- ``--output PAGE`` (repeatable) rewrites the page's figure blocks from the results, as
  ``figures.py`` does; ``--chart`` draws the chart.
- ``--pyperf PATH`` also writes the samples as a pyperf suite, for ``python -m pyperf
  stats``, ``hist`` and ``compare_to`` (each value is a time per operation there).
- ``--rows RESULTS`` measures nothing: it renders the pages and the chart from a
  results file written earlier.
- ``--only GROUP`` (repeatable) runs only the scripts that measure that group of
  figures (see :data:`GROUPS`), e.g. ``--only many-tasks``; naming scripts does the
  same by script. Either way the results file then holds only those rows: give it
  another ``--results`` path to keep the full one.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from _harness import spread
from figures import RESULTS, SCHEMA, Results, evaluate_targets, load, render_page

HERE = Path(__file__).resolve().parent

# Each group of figures (a row's section), and the scripts that measure it.
GROUPS: dict[str, tuple[str, ...]] = {
    "process": ("bench_process",),
    "text": ("bench_text",),
    "workers": ("bench_workers",),
    "many-tasks": ("bench_map",),
    "dask": ("bench_dask",),
    "interpreters": ("bench_interpreters",),
}


# Scripts that run only on a newer Python than the suite's own: on every interpreter
# given (the suite's or an --also-python one) that is at least that version.
NEWER_PYTHON: dict[str, tuple[int, int]] = {"bench_interpreters": (3, 13)}
# Scripts that measure a part of their figures again on every --also-python
# interpreter: the flag that selects that part, and its name in the log.
ON_OTHER_PYTHONS: dict[str, tuple[str, str]] = {
    "bench_process": ("--spawn-only", "spawn"),
    "bench_map": ("--map-tiny-only", "map-tiny"),
}


def _version_info(python: str) -> tuple[int, ...]:
    """The version of the interpreter *python* as a tuple, ``()`` if it cannot be run."""
    text = sys.version.split()[0] if python == sys.executable else _version(python)
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return ()


def _cpu_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of all CPUs since boot, from ``/proc/stat``."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def _version(python: str) -> str:
    """The version of the interpreter *python*, such as ``3.13.0``."""
    out = subprocess.run(
        [python, "-c", "import platform; print(platform.python_version())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return out.stdout.strip() or "?"


def measure(
    scripts: Sequence[Path], quick: bool, processes: int, pythons: Sequence[str]
) -> tuple[list[dict[str, Any]], list[str]]:
    """Run each script *processes* times; return every row they reported, and failures."""
    rows: list[dict[str, Any]] = []
    failed = []
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [
            ([sys.executable, str(script)], script.stem)
            for script in scripts
            if script.stem not in NEWER_PYTHON
        ]
        for script in scripts:
            needed = NEWER_PYTHON.get(script.stem)
            if needed is None:
                continue
            able = [p for p in (sys.executable, *pythons) if _version_info(p) >= needed]
            if not able:
                print(
                    f"## {script.stem}: needs Python {'.'.join(map(str, needed))} or newer "
                    "(give one with --also-python); its rows are not measured",
                    flush=True,
                )
            jobs += [([python, str(script)], f"{script.stem} on {python}") for python in able]
        stems = {script.stem for script in scripts}
        for stem, (flag, label) in ON_OTHER_PYTHONS.items():
            if stem in stems:
                jobs += [
                    ([python, str(HERE / f"{stem}.py"), flag], f"{label} on {python}")
                    for python in pythons
                ]
        for index, (command, label) in enumerate(jobs):
            for process in range(processes):
                print(f"## {label}, process {process + 1} of {processes}", flush=True)
                rows_file = Path(tmp) / f"{index}-{process}.json"
                full = [*command, "--json", str(rows_file), *(["--quick"] if quick else [])]
                if subprocess.run(full, check=False, cwd=HERE).returncode:
                    failed.append(label)
                    break
                rows += json.loads(rows_file.read_text(encoding="utf-8"))
    return rows, failed


def join(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One figure per key, one row per contender, the samples of every process joined."""
    figures: dict[str, dict[str, Any]] = {}
    for row in rows:
        figure = figures.setdefault(
            row["figure"],
            {
                "key": row["figure"],
                "title": row["title"],
                "section": row["section"],
                "unit": row["unit"],
                "higher_is_better": row["higher_is_better"],
                "note": "",
                "rows": {},
            },
        )
        figure["note"] = figure["note"] or row.get("note", "")
        entry = figure["rows"].setdefault(
            row["name"],
            {"name": row["name"], "role": row["role"], "samples": [], "per_process": []},
        )
        entry["samples"] += row["samples"]
        entry["per_process"].append(row["samples"])
    out = []
    for figure in figures.values():
        figure_rows = []
        for entry in figure["rows"].values():
            if not entry["samples"]:
                continue
            entry.update(spread(entry["samples"]))
            entry["n"] = len(entry["samples"])
            figure_rows.append(entry)
        figure["rows"] = figure_rows
        out.append(figure)
    return out


def machine(before: tuple[int, int], after: tuple[int, int], loads: list[float]) -> dict[str, Any]:
    """Where the figures come from, and how busy the machine was (pyperf's metadata)."""
    pyperf: Any = importlib.import_module("pyperf")
    metadata = pyperf.Run([1.0], collect_metadata=True).get_metadata()
    busy = (after[0] - before[0]) / max(after[1] - before[1], 1) * 100
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": f"{platform.system()} {platform.release()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "cpu_model": metadata.get("cpu_model_name", "unknown CPU"),
        "cpu_config": metadata.get("cpu_config", ""),
        "anyio": version("anyio"),
        "procio_workers": version("procio-workers"),
        "pyperf": pyperf.__version__,
        "load_before": loads,
        "load_after": [round(v, 2) for v in os.getloadavg()],
        "busy_percent": busy,
    }


def write_pyperf(results: Results, path: Path) -> None:
    """The samples as a pyperf suite: one benchmark per row, one run per process."""
    pyperf: Any = importlib.import_module("pyperf")
    benchmarks = []
    for figure in results["figures"]:
        for row in figure["rows"]:
            runs = []
            for samples in row["per_process"]:
                # pyperf's unit is a time per operation: turn rates around.
                values = [1 / v if figure["higher_is_better"] else v for v in samples if v > 0]
                if figure["unit"] in ("µs", "ms"):
                    values = [v / (1e6 if figure["unit"] == "µs" else 1e3) for v in values]
                if values:
                    name = f"{figure['key']}: {row['name']}"
                    runs.append(pyperf.Run(values, metadata={"name": name, "unit": "second"}))
            if runs:
                benchmarks.append(pyperf.Benchmark(runs))
    path.unlink(missing_ok=True)
    pyperf.BenchmarkSuite(benchmarks).dump(str(path))


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that all run")
    p.add_argument("--processes", type=int, help="fresh interpreters per script (3; quick: 1)")
    p.add_argument(
        "--also-python",
        action="append",
        default=[],
        metavar="PYTHON",
        help=(
            "also run the spawn rows, the map of tiny calls and the subinterpreter rows"
            " (3.13+) on this interpreter"
        ),
    )
    p.add_argument("--results", type=Path, default=RESULTS, help="the results file to write")
    p.add_argument("--pyperf", type=Path, help="also write the samples as a pyperf suite")
    p.add_argument("--output", type=Path, action="append", default=[], help="a page to render")
    p.add_argument("--chart", type=Path, help="draw the chart (SVG) here")
    p.add_argument("--rows", type=Path, help="render from this results file; measure nothing")
    p.add_argument(
        "--only",
        action="append",
        default=[],
        dest="groups",
        metavar="GROUP",
        choices=sorted(GROUPS),
        help="run only the scripts of this group of figures: " + ", ".join(GROUPS),
    )
    p.add_argument("only", nargs="*", help="run only these scripts (e.g. bench_text)")
    args = p.parse_args()
    named = [*args.only, *(script for group in args.groups for script in GROUPS[group])]

    failed: list[str] = []
    if args.rows:
        results = load(args.rows)
    else:
        scripts = sorted(HERE.glob("bench_*.py"))
        if named:
            unknown = set(named) - {s.stem for s in scripts}
            if unknown:
                p.error(f"no such benchmark script: {', '.join(sorted(unknown))}")
            scripts = [s for s in scripts if s.stem in named]
        processes = args.processes or (1 if args.quick else 3)
        loads = [round(v, 2) for v in os.getloadavg()]
        before = _cpu_ticks()
        rows, failed = measure(scripts, args.quick, processes, args.also_python)
        after = _cpu_ticks()
        figures = join(rows)
        command = ["python", "benchmarks/run.py"]
        if args.quick:
            command.append("--quick")
        if args.processes:
            command += ["--processes", str(args.processes)]
        others = [_version(python) for python in args.also_python]
        for other in others:
            command += ["--also-python", f"PYTHON{other}"]
        for group in args.groups:
            command += ["--only", group]
        command += args.only
        results = {
            "schema": SCHEMA,
            "quick": args.quick,
            "command": shlex.join(command),
            "processes": processes,
            "other_pythons": others,
            "failed": failed,
            "machine": machine(before, after, loads),
            "figures": figures,
            "targets": evaluate_targets(figures),
        }
        args.results.write_text(
            json.dumps(results, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        print(f"wrote {args.results}", flush=True)
        if args.pyperf:
            write_pyperf(results, args.pyperf)
            print(f"wrote {args.pyperf}", flush=True)
    for page in args.output:
        page.write_text(render_page(page.read_text(encoding="utf-8"), results), encoding="utf-8")
        print(f"rendered {page}")
    if args.chart:
        from chart import render_svg

        args.chart.parent.mkdir(parents=True, exist_ok=True)
        args.chart.write_text(render_svg(results), encoding="utf-8")
        print(f"drew {args.chart}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
