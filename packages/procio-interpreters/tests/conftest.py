"""The backend's tests need Python 3.13 or newer; the functions they run live in a module
that the subinterpreters can import by name (``interp_funcs``), hence its folder on
``sys.path``: pytest imports the test modules themselves from their paths."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent / "funcs"))
