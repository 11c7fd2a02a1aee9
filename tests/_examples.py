"""Run a documentation example as a user would: pasted into a file, run on its own."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psutil


def check_example_runs(code: str, script: Path) -> None:
    """Run *code* as *script*: it must exit cleanly, print, and leave no process behind."""
    script.write_text(code, encoding="utf-8")
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=script.parent,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "every example prints something"
    assert result.stderr == ""
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before
