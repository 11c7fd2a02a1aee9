"""``--also-python`` measures the spawn rows and the map of tiny calls on that interpreter.

The map's results are stepped one way before Python 3.12 and another from 3.12 on, so
its figure is worth a second interpreter as much as the spawn's (whose ``posix_spawn``
path is the default from 3.13). These tests run no benchmark: they check which commands
the runner starts, and that the async-for bound hands out the results it is given.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
run: Any = importlib.import_module("run")
bench_map: Any = importlib.import_module("bench_map")

OTHER = "/opt/other/bin/python3.13"


def _commands(monkeypatch: pytest.MonkeyPatch, scripts: list[str]) -> list[list[str]]:
    started: list[list[str]] = []

    def fake_run(command: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
        started.append(command)
        json_path = Path(command[command.index("--json") + 1])
        json_path.write_text("[]", encoding="utf-8")
        return subprocess.CompletedProcess(command, 0)

    monkeypatch.setattr(run.subprocess, "run", fake_run)
    # The other interpreter is not run to learn its version: it is "3.13" here.
    monkeypatch.setattr(run, "_version_info", lambda p: (3, 13) if p == OTHER else (3, 11))
    paths = [ROOT / "benchmarks" / f"{name}.py" for name in scripts]
    rows, failed = run.measure(paths, quick=True, processes=1, pythons=[OTHER])
    assert rows == []
    assert failed == []
    return started


def test_the_map_of_tiny_calls_runs_again_on_the_other_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = _commands(monkeypatch, ["bench_map"])
    on_other = [c for c in started if c[0] == OTHER]
    assert [Path(c[1]).name for c in on_other] == ["bench_map.py"]
    assert "--map-tiny-only" in on_other[0]
    # The suite's own run measures every many-tasks figure, as before.
    own = [c for c in started if c[0] == sys.executable]
    assert len(own) == 1
    assert "--map-tiny-only" not in own[0]


def test_only_the_scripts_asked_for_run_on_the_other_python(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started = _commands(monkeypatch, ["bench_process"])
    on_other = [c for c in started if c[0] == OTHER]
    assert [(Path(c[1]).name, c[2]) for c in on_other] == [("bench_process.py", "--spawn-only")]


@pytest.mark.parametrize("size", [0, 1, 1000])
def test_the_async_for_bound_hands_out_every_result_in_order(size: int) -> None:
    results = list(range(size))
    assert anyio.run(bench_map._async_for_bound, results) == results
