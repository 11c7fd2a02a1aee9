"""The public surface as the type checker sees it (checked by mypy, run by pytest)."""

from __future__ import annotations

import math
import sys

import pytest
from procio_interpreters import InterpreterBackend, InterpreterWorker, interpreters_supported
from procio_workers import WorkerPool
from procio_workers.abc import Worker, WorkerBackend

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # typing_extensions is a dependency of procio-workers below 3.13
    from typing_extensions import assert_type

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        sys.version_info < (3, 13),
        reason="procio-interpreters needs Python 3.13 or newer (subinterpreters)",
    ),
]


async def test_public_types() -> None:
    assert_type(interpreters_supported(), bool)
    backend = InterpreterBackend()
    assert isinstance(backend, WorkerBackend)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        assert_type(await pool.run_sync(math.ldexp, 1.5, 2), float)
    worker = await backend.start_worker({})
    assert_type(worker, Worker)
    assert isinstance(worker, InterpreterWorker)
    assert_type(worker.interpreter_id, int | None)
    assert worker.pid is None
    await worker.aclose()
