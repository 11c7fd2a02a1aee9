"""Hooks of the reliability suite: the seed in the header, the tally written at the end.

Functions that run in a worker must be importable there by module name, so they live in
``procio_reliability_funcs`` and this folder goes on ``sys.path`` (the worker gets the
parent's ``sys.path``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ._support import SCALE, replay_hint, write_report

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def pytest_report_header(config: pytest.Config) -> str:
    return f"procio reliability: {replay_hint()}, scale {SCALE}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    write_report()
