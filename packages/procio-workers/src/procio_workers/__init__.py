"""Run Python functions in reusable worker processes from AnyIO code."""

from __future__ import annotations

__all__: list[str] = []
