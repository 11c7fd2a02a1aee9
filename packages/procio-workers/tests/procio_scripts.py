"""Runs a test's script in a Python process of its own, for what one test process cannot do.

A real SIGINT, a Trio run hosted as a guest of asyncio, a program's own end: each needs
a process whose main task and signal handling belong to the script. The script finds
this folder's importable test functions, and any module the test wrote beside it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45


def run_script(tmp_path: Path, code: str, *args: str) -> list[str]:
    """Run *code* as ``script.py`` in *tmp_path*; return its stdout's lines.

    The script must exit with status 0; if not, the failure shows its stderr's end.
    """
    script = tmp_path / "script.py"
    script.write_text(code)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(HERE), *sys.path])
    completed = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=HANG_GUARD,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr.decode()[-3000:]
    return completed.stdout.decode().splitlines()
