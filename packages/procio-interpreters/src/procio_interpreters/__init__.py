"""Run procio ``WorkerPool`` calls in subinterpreters of this process (Python 3.13+).

::

    from procio_workers import WorkerPool
    from procio_interpreters import InterpreterBackend

    async with WorkerPool(backend=InterpreterBackend(), max_workers=4) as pool:
        result = await pool.run_sync(crunch, data)

Each worker is a subinterpreter with its own GIL, so CPU-bound Python functions run in
parallel without starting processes. Built only on the public extension API of
``procio_workers`` (:mod:`procio_workers.abc`). On Python before 3.13 the package
imports, :func:`interpreters_supported` returns ``False`` and
:class:`InterpreterBackend` raises :exc:`RuntimeError` saying what is needed.
"""

from __future__ import annotations

from ._backend import InterpreterBackend as InterpreterBackend
from ._backend import interpreters_supported as interpreters_supported
from ._worker import InterpreterWorker as InterpreterWorker

__all__ = ["InterpreterBackend", "InterpreterWorker", "interpreters_supported"]
