"""CPU-bound work for the benchmark, importable by name in a subinterpreter."""

from __future__ import annotations


def burn(iterations: int) -> int:
    """Pure-Python arithmetic that holds its interpreter's GIL throughout."""
    total = 0
    for i in range(iterations):
        total = (total + i * i) % 1_000_003
    return total
