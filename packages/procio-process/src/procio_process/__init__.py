"""Async subprocesses for AnyIO: ``run_process``, ``open_process`` and ``Process``."""

from __future__ import annotations

__all__: list[str] = []
