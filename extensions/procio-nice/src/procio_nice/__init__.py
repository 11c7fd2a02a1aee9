"""procio-workers extensions: a launcher that runs workers under ``nice``, and JSON calls."""

from __future__ import annotations

from ._json import JsonSerializer as JsonSerializer
from ._launcher import NiceLauncher as NiceLauncher

__all__ = ["NiceLauncher", "JsonSerializer"]
