"""to_dask.run_sync: the to_process call shape on a Dask client, with its limiter."""

# distributed leaves Client and several of its methods unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import itertools
import os
import time
from types import SimpleNamespace

import anyio
import pytest
from distributed import Client
from procio_dask import to_dask
from procio_workers import BrokenWorkerProcess

pytestmark = pytest.mark.anyio


def _functions_for_the_cluster() -> SimpleNamespace:
    """Nested, so that Dask sends them by value (the workers cannot import this file)."""

    def timed_nap(seconds: float) -> tuple[float, float]:
        start = time.time()
        time.sleep(seconds)
        return start, time.time()

    def die() -> None:
        os._exit(3)

    return SimpleNamespace(**locals())


remote = _functions_for_the_cluster()


async def test_runs_a_call_on_the_given_client(client: Client) -> None:
    assert await to_dask.run_sync(pow, 2, 10, client=client) == 1024


async def test_uses_dasks_current_client_by_default(client: Client) -> None:
    with client.as_current():
        pid = await to_dask.run_sync(os.getpid)
    assert pid != os.getpid()


async def test_without_any_client_says_so() -> None:
    with pytest.raises(RuntimeError, match="no Dask client"):
        await to_dask.run_sync(abs, 1)


async def test_the_limiter_bounds_the_calls_on_the_cluster(client: Client) -> None:
    # The cluster has two worker threads: without the limiter, two naps would overlap.
    limiter = anyio.CapacityLimiter(1)
    spans: list[tuple[float, float]] = []

    async def one() -> None:
        spans.append(await to_dask.run_sync(remote.timed_nap, 0.2, limiter=limiter, client=client))

    async with anyio.create_task_group() as tg:
        for _ in range(3):
            tg.start_soon(one)
    spans.sort()
    assert len(spans) == 3
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


async def test_without_a_limiter_calls_do_run_side_by_side(client: Client) -> None:
    # The converse of the test above, so that it cannot pass by accident.
    spans: list[tuple[float, float]] = []

    async def one() -> None:
        spans.append(await to_dask.run_sync(remote.timed_nap, 0.3, client=client))

    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(one)
    (_, first_end), (second_start, _) = sorted(spans)
    assert second_start < first_end


async def test_the_default_limiter_is_one_per_event_loop() -> None:
    limiter = to_dask.current_default_dask_limiter()
    assert limiter is to_dask.current_default_dask_limiter()
    assert limiter.total_tokens == to_dask.DEFAULT_DASK_LIMIT


async def test_a_cancelled_call_is_shielded_unless_cancellable(client: Client) -> None:
    with anyio.move_on_after(0.05) as scope:
        start, end = await to_dask.run_sync(remote.timed_nap, 0.3, client=client)
    # Not cancellable: the caller waited for the result despite the deadline.
    assert scope.cancel_called
    assert end - start >= 0.3
    with anyio.move_on_after(0.05) as scope:
        await to_dask.run_sync(remote.timed_nap, 0.3, client=client, cancellable=True)
        pytest.fail("a cancellable call must give way to its caller's cancellation")
    assert scope.cancelled_caught


async def test_a_dead_dask_worker_is_a_broken_worker_process(client: Client) -> None:
    with pytest.raises(BrokenWorkerProcess):
        await to_dask.run_sync(remote.die, client=client)
    await anyio.to_thread.run_sync(lambda: client.wait_for_workers(2, timeout=30))
