"""The whole cluster going away under a call: the call fails, the pool still closes."""

# distributed leaves LocalCluster and several of its methods unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import time

import anyio
import pytest
from distributed import LocalCluster
from procio_dask import DaskBackend
from procio_workers import BrokenWorkerProcess, WorkerPool

pytestmark = pytest.mark.anyio


async def test_a_lost_scheduler_fails_the_running_call_and_the_pool_closes() -> None:
    # A cluster of its own, closed while a call sleeps on it: in-process (threads, no
    # worker processes) so that it starts and stops quickly, but over TCP as a remote
    # one would be.
    cluster = await anyio.to_thread.run_sync(
        lambda: LocalCluster(
            n_workers=1,
            processes=False,
            protocol="tcp://",
            threads_per_worker=1,
            host="127.0.0.1",
            # The scheduler always serves HTTP (health, metrics); None would still mean
            # port 8787, which another cluster on this machine may hold.
            dashboard_address="127.0.0.1:0",
        )
    )
    backend = DaskBackend(cluster.scheduler_address, client_options={"timeout": 1})
    try:
        async with WorkerPool(max_workers=1, backend=backend) as pool:
            async with anyio.create_task_group() as tg:

                async def close_the_cluster() -> None:
                    await anyio.sleep(0.3)
                    await anyio.to_thread.run_sync(cluster.close)

                tg.start_soon(close_the_cluster)
                with pytest.raises(BrokenWorkerProcess, match="scheduler-connection-lost"):
                    await pool.run_sync(time.sleep, 1.0)
            assert pool.statistics().broken == 1
    finally:
        await anyio.to_thread.run_sync(cluster.close)
    assert backend.client.status == "closed"
