"""Hooks of the reliability suite: the tally written at the end.

The session's seed is chosen, and named in pytest's header, by the repository's root
``conftest.py``, so that every process of a parallel run shares it.

Functions that run in a worker must be importable there by module name, so they live in
``procio_reliability_funcs`` and this folder goes on ``sys.path`` (the worker gets the
parent's ``sys.path``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from ._support import write_report

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    write_report()
