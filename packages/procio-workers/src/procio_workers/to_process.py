"""``to_process.run_sync``: AnyIO's API, on a default worker pool per event loop.

Code written for :mod:`anyio.to_process` moves by changing its import::

    from procio_workers import to_process

    result = await to_process.run_sync(pow, 2, 100)
"""

from __future__ import annotations

import os
import sys
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
from anyio import CapacityLimiter
from anyio.lowlevel import RunVar

from ._hosting import loop_key, spawn_loop_task
from ._pool import WorkerPool

if sys.version_info >= (3, 11):
    from typing import TypeVarTuple, Unpack
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import TypeVarTuple, Unpack

__all__ = ["run_sync", "current_default_process_limiter"]

T_Retval = TypeVar("T_Retval")
PosArgsT = TypeVarTuple("PosArgsT")

_default_limiter: RunVar[CapacityLimiter] = RunVar("procio_default_process_limiter")
_default_pool: RunVar[tuple[WorkerPool, anyio.Event]] = RunVar("procio_default_pool")
# The event loop that called last, with its open default pool and default limiter: the
# same as the run variables hold, found without looking them up on every call.
_last_used: tuple[weakref.ref[object], WorkerPool, CapacityLimiter] | None = None


async def run_sync(
    func: Callable[[Unpack[PosArgsT]], T_Retval],
    *args: Unpack[PosArgsT],
    cancellable: bool = False,
    limiter: CapacityLimiter | None = None,
    **popen_kwargs: Any,
) -> T_Retval:
    """Call ``func(*args)`` in a worker process and return its result.

    Workers are reused, the most recently used first, leave after five minutes idle
    and when the event loop ends.

    Args:
        func: the function to call; it must be importable in the worker (or be
            defined in a ``python -c`` command or an interactive session, with the
            ``cloudpickle`` extra installed).
        args: its positional arguments, which must be picklable.
        cancellable: if the caller is cancelled while the call runs, kill the worker
            and raise the cancellation once it has exited and been reaped (nothing
            of the call runs after that); by default the call is shielded and runs
            to completion. A call cancelled before it starts reserves no worker.
        limiter: the capacity limiter that bounds how many workers run at once
            (default: :func:`current_default_process_limiter`).
        popen_kwargs: any :class:`subprocess.Popen` keyword argument: the call then
            runs in a fresh worker started with them, which is never reused.

    Like every ``await`` in AnyIO and Trio, this is a checkpoint (a cancel point and a
    schedule point), even when the worker answers at once.

    Raises:
        procio_workers.BrokenWorkerProcess: if the worker died or broke the protocol.
        procio_workers.SerializationError: if the arguments or result cannot travel.
        procio_workers.WorkerError: if the function raised ``SystemExit`` or another
            exception that cannot be re-raised here.
    """
    global _last_used
    loop = loop_key()
    last = _last_used
    if last is not None and last[0]() is loop and not last[1]._closed:
        pool, default_limiter = last[1], last[2]
    else:
        pool = await _get_default_pool()
        default_limiter = current_default_process_limiter()
        _last_used = (weakref.ref(loop), pool, default_limiter)
    return await pool._run(
        func,
        args,
        cancellable=cancellable,
        options=popen_kwargs,
        limiter=limiter or default_limiter,
    )  # type: ignore[return-value]


def current_default_process_limiter() -> CapacityLimiter:
    """Return the limiter that bounds the default pool's workers (one per CPU).

    Returns:
        the event loop's default process limiter.
    """
    try:
        return _default_limiter.get()
    except LookupError:
        limiter = CapacityLimiter(os.cpu_count() or 2)
        _default_limiter.set(limiter)
        return limiter


async def _get_default_pool() -> WorkerPool:
    try:
        pool, opened = _default_pool.get()
    except LookupError:
        pool, opened = _open_default_pool()
    else:
        if pool._closed:
            # Its host task ended (a shutdown handler cancelled it, say) while the event
            # loop goes on: later calls get a new pool.
            pool, opened = _open_default_pool()
    if not opened.is_set():
        await opened.wait()
    return pool


def _open_default_pool() -> tuple[WorkerPool, anyio.Event]:
    pool = WorkerPool(idle_timeout=300.0)
    pool._unbounded()
    opened = anyio.Event()
    _default_pool.set((pool, opened))

    async def host() -> None:
        try:
            async with pool:
                opened.set()
                # Until the event loop ends (which cancels this task) or someone closes
                # the pool: then this task must end too, so that nothing is left behind.
                await pool._wait_closed()
        finally:
            # Waiting callers must not hang if the pool failed to open: they then get
            # the pool's own error.
            opened.set()

    spawn_loop_task(host)
    return pool, opened
