"""Run every benchmark script in one go and print one report.

``python benchmarks/run.py [--quick] [--output PATH]``: each ``bench_*.py`` runs in a
fresh interpreter, one after the other (never side by side, so they do not disturb each
other's figures); their rows are gathered into one markdown table with ratios against
the floor and against AnyIO, printed and, with ``--output``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _harness import Row, table

HERE = Path(__file__).resolve().parent


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks that all run")
    p.add_argument("--output", type=Path, help="also write the markdown report here")
    p.add_argument("only", nargs="*", help="run only these scripts (e.g. bench_text)")
    args = p.parse_args()
    scripts = sorted(HERE.glob("bench_*.py"))
    if args.only:
        scripts = [s for s in scripts if s.stem in args.only]
    with tempfile.TemporaryDirectory() as tmp:
        rows_file = Path(tmp) / "rows.json"
        failed = []
        for script in scripts:
            print(f"## {script.stem}", flush=True)
            command = [sys.executable, str(script), "--json", str(rows_file)]
            if args.quick:
                command.append("--quick")
            if subprocess.run(command, check=False).returncode:
                failed.append(script.stem)
        rows = [Row(**row) for row in json.loads(rows_file.read_text())] if rows_file.exists() else []
    report = table(rows)
    print("\n# All rows\n\n" + report)
    if args.output:
        args.output.write_text(report + "\n", encoding="utf-8")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
