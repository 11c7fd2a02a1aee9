"""A real two-worker Dask cluster on loopback, started and stopped by the tests."""

# distributed leaves Client, LocalCluster and several of their methods unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

from collections.abc import Iterator

import dask
import pytest
from distributed import Client, LocalCluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    """Two single-threaded worker processes and a scheduler, all on 127.0.0.1.

    ``allowed-failures`` is 0 so that a worker dying under a call fails that call at
    once instead of retrying it on the other workers; the scheduler reads it when it
    starts, hence here rather than in the test.
    """
    with (
        dask.config.set({"distributed.scheduler.allowed-failures": 0}),
        LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=1,
            host="127.0.0.1",
            # The scheduler always serves HTTP (health, metrics); None would still mean
            # port 8787, which another cluster on this machine may hold.
            dashboard_address="127.0.0.1:0",
        ) as local,
    ):
        yield local


@pytest.fixture(scope="module")
def client(cluster: LocalCluster) -> Iterator[Client]:
    """A synchronous client that the tests keep open for the whole module."""
    with Client(cluster, set_as_default=False) as connected:
        connected.wait_for_workers(2, timeout=30)
        yield connected


@pytest.fixture
def address(cluster: LocalCluster) -> str:
    """The scheduler's address."""
    return str(cluster.scheduler_address)
