"""Shared helpers of the worker layer's tests: leak checks and importable functions.

Functions that run in a worker must be importable there by module name, so they live
in ``procio_workers_testfuncs`` and this folder goes on ``sys.path`` (the worker gets
the parent's ``sys.path``).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)
