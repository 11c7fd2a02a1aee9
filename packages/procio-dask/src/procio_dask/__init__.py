"""Run procio ``WorkerPool`` calls on a Dask distributed cluster."""

from __future__ import annotations

__all__: list[str] = []
