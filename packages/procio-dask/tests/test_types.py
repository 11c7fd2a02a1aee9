"""The public surface as the type checker sees it (checked by mypy, run by pytest)."""

from __future__ import annotations

import math
import sys

import anyio
import pytest
from distributed import Client
from procio_dask import DEFAULT_SCATTER_THRESHOLD, DaskBackend, to_dask
from procio_workers import WorkerPool
from procio_workers.abc import WorkerBackend

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # typing_extensions is a dependency below 3.13
    from typing_extensions import assert_type

pytestmark = pytest.mark.anyio


async def test_public_types(client: Client) -> None:
    backend = DaskBackend(client, scatter_threshold=DEFAULT_SCATTER_THRESHOLD)
    assert isinstance(backend, WorkerBackend)
    assert_type(backend.client, Client)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        assert_type(await pool.run_sync(math.ldexp, 1.5, 2), float)
        assert_type(await backend.cluster_threads(), int)
    assert_type(await to_dask.run_sync(math.ldexp, 0.5, 3, client=client), float)
    assert_type(to_dask.current_default_dask_limiter(), anyio.CapacityLimiter)
    assert_type(to_dask.DEFAULT_DASK_LIMIT, int)
