"""procio-workers extensions: a launcher that runs workers under ``nice``, and JSON calls.

Workers import this package too: the JSON codec they load, ``procio_nice._codec``, is
one of its modules. So it imports nothing itself, and hands out its classes (whose
modules import ``procio_workers.abc``, hence anyio) on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._json import JsonSerializer as JsonSerializer
    from ._launcher import NiceLauncher as NiceLauncher

__all__ = ["NiceLauncher", "JsonSerializer"]

_HOMES = {"NiceLauncher": "._launcher", "JsonSerializer": "._json"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
