"""The backend in a program of its own: the main module's functions, child processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

NEEDS_3_13 = pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="procio-interpreters needs Python 3.13 or newer (subinterpreters with their own GIL)",
)

SCRIPTS = Path(__file__).parent / "scripts"

pytestmark = [pytest.mark.procio_leak_check, NEEDS_3_13]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=60, check=False
    )


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_main_functions_run_and_a_child_process_leaves_the_workers_alone(loop: str) -> None:
    done = run(str(SCRIPTS / "main_and_child.py"), loop)
    assert done.returncode == 0, done.stderr
    first, again = done.stdout.splitlines()
    assert first.startswith("42 in interpreter ")
    assert again == first, "the same interpreter served both calls"


def test_a_main_module_that_starts_workers_when_imported_gets_a_clear_error() -> None:
    done = run(str(SCRIPTS / "unguarded_main.py"))
    assert done.returncode != 0
    assert 'if __name__ == "__main__":' in done.stderr
    assert done.stderr.count("Traceback") < 10, "no runaway recursion"


@pytest.mark.parametrize("loop", ["asyncio", "trio"])
def test_an_abandoned_call_finishes_before_the_process_ends(loop: str, tmp_path: Path) -> None:
    done_file = tmp_path / "done"
    done = run(str(SCRIPTS / "abandon_at_exit.py"), loop, str(done_file))
    assert done.returncode == 0, done.stderr
    assert done.stdout == "closed False\n", "the pool closed while the call still ran"
    assert done_file.exists(), "the process waited for the abandoned call"
    assert "Fatal" not in done.stderr
