"""Run procio ``WorkerPool`` calls on a Dask distributed cluster.

::

    from procio_workers import WorkerPool
    from procio_dask import DaskBackend

    async with WorkerPool(backend=DaskBackend("tcp://10.0.0.5:8786"), max_workers=32) as pool:
        result = await pool.run_sync(simulate, params)

``to_dask.run_sync(func, *args, cancellable=False, limiter=None)`` is the call shape of
``to_process.run_sync`` on Dask's default client, without a pool.

Built only on the public extension API of ``procio_workers``
(:mod:`procio_workers.abc`). ``procio-dask`` must be installed on the Dask workers too:
each call runs there through a small wrapper of this package.
"""

from __future__ import annotations

from . import to_dask as to_dask
from ._backend import DEFAULT_SCATTER_THRESHOLD as DEFAULT_SCATTER_THRESHOLD
from ._backend import DaskBackend as DaskBackend

__all__ = ["DaskBackend", "DEFAULT_SCATTER_THRESHOLD", "to_dask"]
