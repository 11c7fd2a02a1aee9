"""Lambdas, closures and local functions reach a worker by value when cloudpickle is there.

The README and the getting-started page promise that the ``cloudpickle`` extra lets
lambdas and closures through, with the default serializer and with ``to_process``.
Without cloudpickle, the error says what to install.
"""

from __future__ import annotations

import functools
import operator

import anyio
import pytest
from procio_workers import SerializationError, WorkerPool, _wire, to_process

pytestmark = pytest.mark.anyio
pytest.importorskip("cloudpickle", reason="the cloudpickle extra is not installed")
TIMEOUT = 60


def _make_adder(n: int) -> object:
    def add(x: int) -> int:
        return x + n

    return add


async def test_a_lambda_runs_in_a_pool_with_the_default_serializer() -> None:
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(max_workers=1) as pool:
            assert await pool.run_sync(lambda x: x * 3, 14) == 42


async def test_a_closure_and_a_partial_of_a_lambda_run_through_to_process() -> None:
    with anyio.fail_after(TIMEOUT):
        assert await to_process.run_sync(_make_adder(5), 1) == 6  # type: ignore[arg-type]
        square = functools.partial(lambda x, y: x * y, 7)
        assert await to_process.run_sync(square, 6) == 42


async def test_a_function_importable_by_name_still_travels_by_reference() -> None:
    # By reference: the worker imports operator.add itself; cloudpickle would pickle a
    # builtin by reference too, so look at the payload instead of the result.
    async with WorkerPool(max_workers=1) as pool:
        frame = pool.backend.prepare_call(operator.add, (1, 2))
        payload = b"".join(bytes(memoryview(part)) for part in frame[1:]) or bytes(frame[0])
        assert b"cloudpickle" not in payload
        assert await pool.run_sync(operator.add, 1, 2) == 3


async def test_without_cloudpickle_a_lambda_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def unavailable() -> _wire.PickleCodec:
        raise ImportError("No module named 'cloudpickle'")

    monkeypatch.setattr(_wire, "cloudpickle_codec", unavailable)
    async with WorkerPool(max_workers=1) as pool:
        extra = r"pip install 'procio-workers\[cloudpickle\]'"
        with pytest.raises(SerializationError, match=extra):
            await pool.run_sync(lambda: 1)
        # Nothing was lost: the pool still works.
        assert await pool.run_sync(operator.neg, 2) == -2


async def test_an_unpicklable_argument_is_still_a_serialization_error() -> None:
    import threading

    async with WorkerPool(max_workers=1) as pool:
        with pytest.raises(SerializationError):
            await pool.run_sync(lambda lock: 1, threading.Lock())
