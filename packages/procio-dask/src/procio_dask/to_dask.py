"""``to_dask.run_sync``: the call shape of ``to_process.run_sync``, on a Dask cluster.

Code that calls :func:`procio_workers.to_process.run_sync` moves a call to the cluster
by changing its import, once a :class:`distributed.Client` is open::

    from distributed import Client
    from procio_dask import to_dask

    client = Client("tcp://10.0.0.5:8786")  # Dask's default client from now on
    result = await to_dask.run_sync(pow, 2, 100)

No pool is involved: every call goes to the Dask scheduler, which queues it and picks
a Dask worker for it. The limiter bounds how many calls of this event loop are on the
cluster at once.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar, cast

from anyio import CancelScope, CapacityLimiter
from anyio.lowlevel import RunVar, checkpoint_if_cancelled
from distributed import Client, default_client

from ._backend import DaskBackend

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import TypeVarTuple, Unpack

__all__ = ["run_sync", "current_default_dask_limiter", "DEFAULT_DASK_LIMIT"]

T_Retval = TypeVar("T_Retval")
PosArgsT = TypeVarTuple("PosArgsT")

#: How many calls of one event loop the default limiter lets onto the cluster at once.
DEFAULT_DASK_LIMIT = 64

_default_limiter: RunVar[CapacityLimiter] = RunVar("procio_dask_default_limiter")


async def run_sync(
    func: Callable[[Unpack[PosArgsT]], T_Retval],
    *args: Unpack[PosArgsT],
    cancellable: bool = False,
    limiter: CapacityLimiter | None = None,
    client: Client | None = None,
) -> T_Retval:
    """Call ``func(*args)`` on a Dask worker and return its result.

    Args:
        func: the function to call; Dask sends it by reference if it is importable on
            the workers, else by value (lambdas, closures, functions of ``__main__``).
        args: its positional arguments; large buffers are scattered ahead of the call.
        cancellable: if the caller is cancelled while the call is on the cluster,
            release the call and raise the cancellation at once (a call still queued
            never runs; one already running runs to its end on its Dask worker and its
            result is dropped); by default the caller waits for the result.
        limiter: bounds how many calls are on the cluster at once (default:
            :func:`current_default_dask_limiter`).
        client: the synchronous :class:`distributed.Client` to submit through (default:
            Dask's default client, the last one opened).

    Raises:
        procio_workers.BrokenWorkerProcess: if the Dask worker running the call died
            (after the scheduler's ``allowed-failures`` retries) or the cluster dropped
            the call.
        procio_workers.SerializationError: if the call could not be serialized (before
            anything is submitted), rebuilt on the Dask worker, or its result could not
            be brought back.
        procio_workers.WorkerError: if the function raised ``SystemExit`` or another
            exception that is not an :class:`Exception`, or one that could not be
            pickled on the Dask worker or rebuilt here.
        RuntimeError: if no client is given and Dask has no default client.
        TypeError: if the client is asynchronous.
    """
    await checkpoint_if_cancelled()
    if client is None:
        try:
            client = default_client()  # type: ignore[no-untyped-call]  # unannotated in distributed
        except ValueError:
            raise RuntimeError(
                "no Dask client: open a distributed.Client first or pass client="
            ) from None
    backend = DaskBackend(client)
    request = backend.prepare_call(func, args)
    async with limiter or current_default_dask_limiter():
        worker = await backend.start_worker({})
        with CancelScope(shield=not cancellable):
            result = await worker.call(request)
    return cast("T_Retval", result)


def current_default_dask_limiter() -> CapacityLimiter:
    """Return the limiter of :func:`run_sync` calls made without one, per event loop.

    It starts with :data:`DEFAULT_DASK_LIMIT` tokens; set its ``total_tokens`` to the
    cluster's thread count (see :meth:`DaskBackend.cluster_threads`) to keep exactly as
    many calls on the cluster as it can run.
    """
    try:
        return _default_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(DEFAULT_DASK_LIMIT)
        _default_limiter.set(limiter)
        return limiter
