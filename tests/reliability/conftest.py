"""Hooks of the reliability suite: the seed in the header, the tally written at the end."""

from __future__ import annotations

import pytest

from ._support import SCALE, replay_hint, write_report


def pytest_report_header(config: pytest.Config) -> str:
    return f"procio reliability: {replay_hint()}, scale {SCALE}"


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    write_report()
