"""Bad input to worker calls: what cannot be pickled, or cannot be unpickled on the other
side, and exceptions the parent cannot rebuild.

Each ends in a typed error that says what happened, and none of them costs the worker:
the next call runs on the same process.
"""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest
from procio_workers import SerializationError, WorkerError, WorkerPool

from ._support import LeakGuard, tally

if TYPE_CHECKING:
    from tests.reliability import procio_reliability_funcs as funcs
else:
    import procio_reliability_funcs as funcs

pytestmark = pytest.mark.anyio


@pytest.fixture
def parent_only_module() -> Iterator[types.ModuleType]:
    """A module that exists in the parent only: its objects pickle, but no worker can
    unpickle them."""
    module = types.ModuleType("procio_parent_only")
    exec(
        "class ParentOnly:\n    def __init__(self, n):\n        self.n = n\n",
        module.__dict__,
    )
    sys.modules[module.__name__] = module
    yield module
    del sys.modules[module.__name__]


async def check_worker_unharmed(pool: WorkerPool, pid: int) -> None:
    assert await pool.run_sync(funcs.pid) == pid
    assert pool.statistics().broken == 0


async def test_unpicklable_arguments_fail_before_any_worker_is_used(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        unpicklable: list[object] = [
            threading.Lock(),
            lambda: None,
            (x for x in range(3)),
            [1, {2: threading.Event()}],
        ]
        for bad in unpicklable:
            with pytest.raises(SerializationError):
                await pool.run_sync(funcs.echo, bad)
            tally("unpicklable arguments refused")
        await check_worker_unharmed(pool, pid)
        assert pool.statistics().started == 1
    guard.check()


async def test_arguments_the_worker_cannot_unpickle_are_a_serialization_error(
    request: pytest.FixtureRequest, parent_only_module: types.ModuleType
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(SerializationError, match="procio_parent_only"):
            await pool.run_sync(funcs.echo, parent_only_module.ParentOnly(3))
        await check_worker_unharmed(pool, pid)
    guard.check()
    tally("arguments the worker could not rebuild")


async def test_an_unpicklable_result_is_a_serialization_error(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(SerializationError, match="result"):
            await pool.run_sync(funcs.unpicklable_result)
        await check_worker_unharmed(pool, pid)
    guard.check()
    tally("unpicklable results refused")


async def test_an_exception_whose_class_the_parent_cannot_import_is_a_worker_error(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_unimportable)
        assert caught.value.type_name == "procio_worker_only.WorkerOnlyError"
        assert "raised from a class the parent lacks" in caught.value.message
        assert "raise_unimportable" in caught.value.traceback
        await check_worker_unharmed(pool, pid)
    guard.check()
    tally("exceptions of classes the parent lacks")


async def test_an_unpicklable_exception_still_arrives_as_a_worker_error(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_unpicklable)
        assert caught.value.type_name == "builtins.RuntimeError"
        assert caught.value.message == "holds a lock"
        assert "raise_unpicklable" in caught.value.traceback
        await check_worker_unharmed(pool, pid)
    guard.check()
    tally("unpicklable exceptions")


@pytest.mark.parametrize(
    ("function", "args", "type_name"),
    [
        (funcs.raise_system_exit, (4,), "builtins.SystemExit"),
        (funcs.raise_keyboard_interrupt, (), "builtins.KeyboardInterrupt"),
    ],
)
async def test_system_exit_and_keyboard_interrupt_never_reach_the_parent_as_such(
    request: pytest.FixtureRequest, function: Any, args: tuple[Any, ...], type_name: str
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(function, *args)
        assert caught.value.type_name == type_name
        await check_worker_unharmed(pool, pid)
    guard.check()
    tally("SystemExit or KeyboardInterrupt contained")


async def test_a_frame_over_the_limit_is_refused_in_the_parent(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(SerializationError, match="frame limit"):
            await pool.run_sync(funcs.echo, b"x" * (2 << 20))
        await check_worker_unharmed(pool, pid)
    guard.check()
    tally("oversized calls refused")


async def test_a_result_over_the_frame_limit_is_a_typed_error_and_the_pool_goes_on(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        first = await pool.run_sync(os.getpid)
        # The worker measures the result against the limit it was told in INIT and
        # refuses it itself: a typed error, and the worker lives on.
        with pytest.raises(SerializationError) as caught:
            await pool.run_sync(funcs.big_result_killed_after, 2 << 20, 3600.0)
        assert "limit" in str(caught.value)
        assert await pool.run_sync(funcs.echo, "next") == "next"
        assert await pool.run_sync(os.getpid) == first
    guard.check()
    tally("oversized results refused")
