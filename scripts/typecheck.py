"""Run ``mypy --strict`` over every source folder and every test folder.

The sources of all packages, the benchmarks, the scripts and the root conftest are
checked in one run. Each ``tests`` folder is checked in a run of its own with its
package folder as the import base, so that ``packages/a/tests`` and ``packages/b/tests``
can both be the module ``tests``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _runs() -> list[tuple[list[str], list[str]]]:
    sources = sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("packages/*/src"))
    sources += sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("extensions/*/src"))
    runs: list[tuple[list[str], list[str]]] = []
    runs.append(([*sources, "benchmarks", "scripts"], [*sources, "benchmarks", "scripts"]))
    runs.append((["conftest.py", "tests"], sources))
    for tests in sorted(ROOT.glob("*/*/tests")):
        package = tests.parent.relative_to(ROOT)
        runs.append(([str(package / "tests")], [str(package), *sources]))
    return runs


def _has_python(path: Path) -> bool:
    return path.suffix == ".py" or any(path.rglob("*.py"))


def main(extra: list[str]) -> int:
    failed = 0
    for targets, path in _runs():
        targets = [t for t in targets if _has_python(ROOT / t)]
        if not targets:
            continue
        env = dict(os.environ, MYPYPATH=os.pathsep.join(path))
        command = [sys.executable, "-m", "mypy", "--config-file", "mypy.ini", *extra, *targets]
        print("$ MYPYPATH=" + env["MYPYPATH"] + " mypy " + " ".join(targets), flush=True)
        failed |= subprocess.run(command, cwd=ROOT, env=env, check=False).returncode
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
