"""Idle polling: what a worker does between calls, as WorkerPool(idle_poll=...) sets it."""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import ProcessBackend, WorkerPool

if TYPE_CHECKING:
    from tests import procio_polling_testfuncs as pfuncs
else:
    import procio_polling_testfuncs as pfuncs

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_yield"), reason="workers poll only where os.sched_yield exists"
)

# Far longer than any polling window used here: a call this late always finds the worker
# asleep (if it polls adaptively) whatever the machine's load.
APART = 0.05


@pytest.mark.parametrize(
    ("setting", "expected"),
    [("adaptive", (200e-6, True)), (0, (0.0, False)), (0.001, (0.001, False))],
)
@pytest.mark.anyio
async def test_the_worker_is_told_its_idle_polling(setting: object, expected: object) -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1, idle_poll=setting) as pool:  # type: ignore[arg-type]
            assert await pool.run_sync(pfuncs.idle_poll) == expected


@pytest.mark.anyio
async def test_default_is_adaptive() -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(pfuncs.idle_poll) == (200e-6, True)


@pytest.mark.anyio
async def test_idle_poll_zero_never_polls_even_back_to_back() -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1, idle_poll=0) as pool:
            await pool.run_sync(pfuncs.count_polls)
            for i in range(200):
                assert await pool.run_sync(pfuncs.identity, i) == i
            assert await pool.run_sync(pfuncs.polls) == 0


@pytest.mark.parametrize("calls_per_pause", [1, 2])
@pytest.mark.anyio
async def test_adaptive_sleeps_at_once_when_calls_come_apart(calls_per_pause: int) -> None:
    # Each call comes long after the last answer, and the worker answers it and then
    # sleeps without polling. With two calls per pause, a caller that was woken late
    # catches up with two calls in quick succession: one quick gap is no run of
    # back-to-back calls either, and polling after the second answer would burn the CPU
    # until the next pause ends.
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(pfuncs.identity, -1) == -1  # starts the worker
            await anyio.sleep(APART)
            await pool.run_sync(pfuncs.count_polls)
            # Several times over: any one quick enough catch-up would show polling.
            for i in range(12):
                await anyio.sleep(APART)
                for j in range(calls_per_pause):  # the second one at once
                    assert await pool.run_sync(pfuncs.identity, (i, j)) == (i, j)
            await anyio.sleep(APART)
            assert await pool.run_sync(pfuncs.polls) == 0


@pytest.mark.anyio
async def test_adaptive_polls_when_calls_come_back_to_back() -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            await pool.run_sync(pfuncs.count_polls)
            for i in range(300):
                assert await pool.run_sync(pfuncs.identity, i) == i
            # Some of 300 back-to-back calls came within 200 µs of the answer before.
            assert await pool.run_sync(pfuncs.polls) > 0


@pytest.mark.anyio
async def test_the_parent_polls_for_a_reply_only_when_the_worker_polls(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The parent polls for a reply only if it takes the worker to be awake, polling for
    # the call: it mirrors the worker's rule. Three calls in a row after a pause: the
    # worker sleeps after the second answer (one quick gap is not enough), so the
    # parent must not poll for the third reply, which comes only once the worker wakes.
    import procio_workers._process_backend as backend_module

    yields = [0]
    original = backend_module._yield_cpu

    def counting() -> None:
        yields[0] += 1
        original()

    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            assert await pool.run_sync(pfuncs.identity, -1) == -1
            monkeypatch.setattr(backend_module, "_yield_cpu", counting)
            for i in range(5):
                await anyio.sleep(APART)
                for j in range(3):
                    assert await pool.run_sync(pfuncs.identity, (i, j)) == (i, j)
            assert yields[0] == 0


@pytest.mark.anyio
async def test_fixed_polling_polls_even_when_calls_come_apart() -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1, idle_poll=0.02) as pool:
            await pool.run_sync(pfuncs.count_polls)
            for i in range(3):
                await anyio.sleep(APART)
                assert await pool.run_sync(pfuncs.identity, i) == i
            assert await pool.run_sync(pfuncs.polls) > 0


@pytest.mark.parametrize("bad", [-1e-6, 1.5, math.nan, math.inf])
def test_idle_poll_out_of_range_is_refused(bad: float) -> None:
    with pytest.raises(ValueError, match="idle_poll"):
        WorkerPool(1, idle_poll=bad)
    with pytest.raises(ValueError, match="idle_poll"):
        ProcessBackend(idle_poll=bad)


@pytest.mark.parametrize("bad", [True, "fast", "ADAPTIVE", None, b"adaptive", [0.1]])
def test_idle_poll_of_a_wrong_type_is_refused(bad: object) -> None:
    with pytest.raises(TypeError, match="idle_poll"):
        WorkerPool(1, idle_poll=bad)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="idle_poll"):
        ProcessBackend(idle_poll=bad)  # type: ignore[arg-type]


def test_idle_poll_cannot_be_combined_with_a_backend() -> None:
    with pytest.raises(TypeError, match="idle_poll"):
        WorkerPool(1, idle_poll=0, backend=ProcessBackend())


def test_backend_keeps_the_setting() -> None:
    assert ProcessBackend().idle_poll == "adaptive"
    assert ProcessBackend(idle_poll=0).idle_poll == 0
