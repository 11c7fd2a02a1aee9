"""The process backend under pressure: frame limits on both sides, descriptors passed
and kept private, failed starts, workers that die while a fork holds their pipes, and
the signal dispositions that programs started from a worker see."""

from __future__ import annotations

import errno
import os
import resource
import signal
import sys
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import (
    ProcessBackend,
    RemoteTraceback,
    SerializationError,
    WorkerError,
    WorkerPool,
    to_process,
)

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, which is Linux's")


# -- frame limits ------------------------------------------------------------------


@pytest.mark.parametrize(
    "argument",
    [b"x" * 10_000, "y" * 10_000, [bytes([n]) * 600 for n in range(20)]],
    ids=["bytes", "str", "list"],
)
async def test_a_small_call_over_the_frame_limit_is_refused_before_it_is_sent(
    argument: object,
) -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        pid = await pool.run_sync(os.getpid)
        with pytest.raises(SerializationError, match="frame limit of 1000 bytes"):
            await pool.run_sync(funcs.echo, argument)
        # Nothing reached the worker: the same one takes the next call.
        assert await pool.run_sync(funcs.echo, "small") == "small"
        assert await pool.run_sync(os.getpid) == pid
        figures = pool.statistics()
        assert (figures.started, figures.broken) == (1, 0)
    guard.check()


async def test_a_call_just_under_the_frame_limit_goes_through() -> None:
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        assert await pool.run_sync(funcs.length, b"x" * 800) == 800


async def test_an_exception_over_the_frame_limit_comes_back_whole_when_its_object_fits() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        pid = await pool.run_sync(os.getpid)
        # Message and traceback each hold the 600,000 characters: 1.2 MB of description
        # over a 1 MiB limit, though the pickled exception alone fits.
        with pytest.raises(ValueError) as caught:  # noqa: PT011 - the message is checked
            await pool.run_sync(funcs.raise_long, 600_000)
        assert str(caught.value) == "x" * 600_000
        remote = caught.value.__cause__
        assert isinstance(remote, RemoteTraceback)
        assert "raise_long" in remote.traceback
        assert len(remote.traceback) < 1 << 20
        assert await pool.run_sync(os.getpid) == pid
        assert pool.statistics().broken == 0
    guard.check()


async def test_an_exception_too_big_to_travel_is_a_worker_error_naming_its_type() -> None:
    guard = funcs.LeakGuard()
    async with WorkerPool(max_workers=1, max_frame_length=1 << 20) as pool:
        pid = await pool.run_sync(os.getpid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_long, 3_000_000)
        assert caught.value.type_name == "builtins.ValueError"
        assert caught.value.exception is None
        assert caught.value.message.startswith("xxxx")
        assert len(caught.value.message) < 1 << 20
        assert "raise_long" in caught.value.traceback
        assert await pool.run_sync(os.getpid) == pid
        assert pool.statistics().broken == 0
    guard.check()


async def test_an_exception_under_a_tiny_frame_limit_still_names_its_type() -> None:
    async with WorkerPool(max_workers=1, max_frame_length=1000) as pool:
        pid = await pool.run_sync(os.getpid)
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(funcs.raise_long, 5000)
        assert caught.value.type_name == "builtins.ValueError"
        assert await pool.run_sync(os.getpid) == pid


# -- bad arguments of the backend -------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "error", "words"),
    [
        ({"max_frame_length": 0}, ValueError, "max_frame_length"),
        ({"max_frame_length": -5}, ValueError, "max_frame_length"),
        ({"max_frame_length": 100}, ValueError, "max_frame_length"),
        ({"max_frame_length": 1.5e6}, TypeError, "max_frame_length"),
        ({"max_frame_length": True}, TypeError, "max_frame_length"),
        ({"output": "stdout"}, TypeError, "output"),
        ({"start_timeout": 0}, ValueError, "start_timeout"),
        ({"start_timeout": "soon"}, TypeError, "start_timeout"),
        ({"serializer": object()}, TypeError, "serializer"),
        ({"launcher": "nice"}, TypeError, "launcher"),
    ],
)
def test_bad_backend_arguments_are_refused_at_construction(
    arguments: dict[str, Any], error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=words):
        ProcessBackend(**arguments)


def test_a_pool_refuses_a_bad_frame_limit_at_construction() -> None:
    with pytest.raises(ValueError, match="max_frame_length"):
        WorkerPool(max_frame_length=0)


# -- descriptors -------------------------------------------------------------------


# -- death while idle, a fork holding the pipes -------------------------------------


# -- signals -----------------------------------------------------------------------

