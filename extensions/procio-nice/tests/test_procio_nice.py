"""procio-nice through procio_workers' conformance kit and a real pool."""

from __future__ import annotations

import os

import pytest
from procio_nice import JsonSerializer, NiceLauncher
from procio_nice._json import RemoteJsonError
from procio_workers import WorkerPool, testing

pytestmark = pytest.mark.anyio


def _expected_niceness(increment: int) -> int:
    return min(os.getpriority(os.PRIO_PROCESS, 0) + increment, 19)


def test_the_json_serializer_conforms() -> None:
    testing.check_serializer(JsonSerializer())


async def test_the_nice_launcher_conforms() -> None:
    await testing.check_launcher(NiceLauncher(5))


async def test_the_nice_launcher_conforms_with_json_calls() -> None:
    await testing.check_launcher(NiceLauncher(5), JsonSerializer())


async def test_the_worker_program_conforms_with_the_json_codec() -> None:
    await testing.check_worker_command(testing.python_worker_command(), JsonSerializer())


async def test_a_worker_with_json_calls_imports_neither_anyio_nor_procio_workers() -> None:
    # The worker itself lists what it imported: the codec must not have brought them.
    listing = (
        "sorted(name for name in __import__('sys').modules "
        "if name.partition('.')[0] in ('anyio', 'procio_workers'))"
    )
    async with WorkerPool(max_workers=1, serializer=JsonSerializer()) as pool:
        assert await pool.run_sync(max, [3, 9, 4]) == 9
        assert await pool.run_sync(eval, listing) == []


async def test_workers_run_at_the_requested_niceness() -> None:
    async with WorkerPool(max_workers=1, launcher=NiceLauncher(7)) as pool:
        niceness = await pool.run_sync(os.getpriority, os.PRIO_PROCESS, 0)
    assert niceness == _expected_niceness(7)


async def test_the_launcher_and_serializer_are_found_by_entry_point_name() -> None:
    async with WorkerPool(max_workers=1, launcher="nice", serializer="json") as pool:
        assert await pool.run_sync(os.getpriority, os.PRIO_PROCESS, 0) == _expected_niceness(10)
        assert await pool.run_sync(max, [3, 9, 4]) == 9
        with pytest.raises(ValueError, match="invalid literal"):
            await pool.run_sync(int, "x")
        with pytest.raises(RemoteJsonError, match="JSONDecodeError"):
            await pool.run_sync(__import__("json").loads, "{")


def test_a_lambda_is_refused_by_the_json_serializer() -> None:
    with pytest.raises(TypeError, match="import name"):
        JsonSerializer().dump_call(lambda: None, ())


def test_niceness_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="between 0 and 19"):
        NiceLauncher(40)
