"""InterpreterBackend's idle polling: every setting serves calls, near and far apart."""

from __future__ import annotations

import math
import sys
import threading
from collections.abc import AsyncIterator

import anyio

# On sys.path through conftest.py (see test_backend.py).
import interp_funcs as funcs  # type: ignore[import-not-found, unused-ignore]
import pytest
from procio_interpreters import InterpreterBackend
from procio_interpreters._runtime import interpreter_ids
from procio_workers import WorkerPool

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        sys.version_info < (3, 13), reason="procio-interpreters needs Python 3.13 or newer"
    ),
]

TIMEOUT = 30


@pytest.fixture(autouse=True)
async def no_interpreter_left(anyio_backend: object) -> AsyncIterator[None]:
    before = interpreter_ids()
    yield
    assert interpreter_ids() == before
    assert [t for t in threading.enumerate() if t.name == "procio-interpreter"] == []


@pytest.mark.parametrize("idle_poll", ["adaptive", 0, 0.0, 1e-6, 0.001, 1])
def test_every_documented_setting_is_taken_and_kept(idle_poll: object) -> None:
    backend = InterpreterBackend(idle_poll=idle_poll)  # type: ignore[arg-type]
    assert backend.idle_poll == idle_poll


@pytest.mark.parametrize("idle_poll", ["fast", b"adaptive", None, True, [0.1]])
def test_a_setting_of_the_wrong_type_is_a_type_error(idle_poll: object) -> None:
    with pytest.raises(TypeError, match="idle_poll"):
        InterpreterBackend(idle_poll=idle_poll)  # type: ignore[arg-type]


@pytest.mark.parametrize("idle_poll", [-1e-6, 1.5, math.inf, math.nan])
def test_a_setting_out_of_range_is_a_value_error(idle_poll: float) -> None:
    with pytest.raises(ValueError, match="idle_poll"):
        InterpreterBackend(idle_poll=idle_poll)


@pytest.mark.parametrize("idle_poll", ["adaptive", 0, 1e-4, 1])
async def test_calls_back_to_back_and_far_apart_all_get_their_own_results(
    idle_poll: object,
) -> None:
    # Back to back, a polling guest takes the next call while it polls, and the caller
    # polls for the reply; far apart (past a 100 us window), the guest has gone back to
    # a blocking wait and must wake for the call. A wake-up lost on either path hangs,
    # and the timeout turns that into a failure; a reply taken for the wrong call shows
    # as a wrong value.
    backend = InterpreterBackend(idle_poll=idle_poll)  # type: ignore[arg-type]
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(backend=backend, max_workers=1) as pool:
            for round_ in range(3):
                for i in range(50):
                    assert await pool.run_sync(funcs.identity, (round_, i)) == (round_, i)
                for i in range(5):
                    await anyio.sleep(0.005)
                    assert await pool.run_sync(funcs.identity, -i) == -i


async def test_a_guest_polling_for_a_long_while_still_stops_when_the_pool_closes() -> None:
    # With a 1 s window the guest is mid-poll when the pool closes: it must see the end
    # of input then, not only after its window, and the interpreter must be gone when
    # the pool's exit returns (the fixture checks).
    backend = InterpreterBackend(idle_poll=1)
    with anyio.fail_after(TIMEOUT):
        async with (
            WorkerPool(backend=backend, max_workers=2) as pool,
            anyio.create_task_group() as group,
        ):
            for i in range(8):
                group.start_soon(pool.run_sync, funcs.identity, i)


# Far longer than the 200 us window: a call this late always finds the guest asleep.
APART = 0.05


async def test_an_adaptive_guest_sleeps_after_a_lone_quick_call() -> None:
    # After a pause, a caller woken late catches up with two calls in quick succession:
    # one quick gap is no run of back-to-back calls, and the guest must not poll after
    # the second answer (as ProcessBackend's workers do not).
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
            assert await pool.run_sync(funcs.identity, -1) == -1
            await anyio.sleep(APART)
            await pool.run_sync(funcs.count_polls)
            for i in range(12):
                await anyio.sleep(APART)
                assert await pool.run_sync(funcs.identity, i) == i
                assert await pool.run_sync(funcs.identity, -i) == -i  # at once
            await anyio.sleep(APART)
            assert await pool.run_sync(funcs.polls) == 0


async def test_an_adaptive_guest_polls_when_calls_come_back_to_back() -> None:
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
            await pool.run_sync(funcs.count_polls)
            for i in range(300):
                assert await pool.run_sync(funcs.identity, i) == i
            assert await pool.run_sync(funcs.polls) > 0


async def test_the_parent_polls_for_a_reply_only_when_the_guest_polls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Three calls at once after a pause: the guest sleeps after the second answer (one
    # quick gap is not enough), so the parent must not poll for the third reply.
    import procio_interpreters._worker as worker_module

    polled = [0]
    original = worker_module._receive

    async def counting(sock: object, poll: float = 0.0) -> bytes:
        if poll > 0:
            polled[0] += 1
        return await original(sock, poll)  # type: ignore[arg-type]

    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
            assert await pool.run_sync(funcs.identity, -1) == -1
            monkeypatch.setattr(worker_module, "_receive", counting)
            for i in range(5):
                await anyio.sleep(APART)
                for j in range(3):
                    assert await pool.run_sync(funcs.identity, (i, j)) == (i, j)
            assert polled[0] == 0
