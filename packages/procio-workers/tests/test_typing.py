"""Static types of the public surface: mypy checks these assert_type lines."""

from __future__ import annotations

import signal
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import (
    BrokenWorkerProcess,
    PoolStatistics,
    RemoteTraceback,
    WorkerError,
    WorkerPool,
    to_process,
)

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import assert_type

pytestmark = pytest.mark.anyio


async def test_run_sync_keeps_the_functions_types() -> None:
    result = await to_process.run_sync(funcs.concat, "a", b"b", 3)
    assert_type(result, tuple[str, bytes, int])
    assert result == ("a", b"b", 3)
    limiter = to_process.current_default_process_limiter()
    assert_type(limiter, anyio.CapacityLimiter)
    async with WorkerPool(max_workers=1) as pool:
        assert_type(pool, WorkerPool)
        value = await pool.run_sync(funcs.concat, "x", b"y", 1, cancellable=True)
        assert_type(value, tuple[str, bytes, int])
        assert_type(pool.statistics(), PoolStatistics)


def test_error_attributes_are_typed() -> None:
    error = BrokenWorkerProcess("gone", pid=1, returncode=-9, stderr_tail=["x"])
    assert_type(error.pid, int | None)
    assert_type(error.stderr_tail, tuple[str, ...])
    assert isinstance(error.signal, signal.Signals)
    assert error.signal.name == "SIGKILL"
    remote = WorkerError("mod.Error", "text", "tb")
    assert_type(remote.exception, BaseException | None)
    assert_type(RemoteTraceback("tb").traceback, str)
