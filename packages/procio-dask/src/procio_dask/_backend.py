"""A :class:`~procio_workers.abc.WorkerBackend` that runs calls on a Dask cluster.

The bridge between the caller's event loop and Dask: the backend drives a synchronous
:class:`distributed.Client`, whose own event loop runs in a thread that Dask starts and
owns. Nothing of Dask ever runs on the caller's loop, which is why the same code serves
asyncio, uvloop and Trio. Every blocking client call (connecting, closing, submitting a
call, scattering a large argument, waiting for and fetching a result, rebuilding the
results of a chunk) runs in an AnyIO worker thread. Only pickling the call happens in
the caller's task, before anything is submitted, as for procio's local workers: an
argument that cannot travel fails there, at once. A call's waiting thread is abandoned
if the call is cancelled; it waits in short slices and stops at the next one, so no
thread outlives its call for long. Dask never calls back into the caller's event loop,
so a loop that ends while Dask still works cannot leave a Dask thread stuck.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from contextlib import suppress
from functools import partial
from typing import Any, cast

from anyio import CancelScope, CapacityLimiter, to_thread
from anyio.lowlevel import checkpoint
from distributed import Client, Future, KilledWorker
from distributed import TimeoutError as DaskTimeoutError
from distributed.client import FutureCancelledError
from distributed.deploy.cluster import Cluster
from procio_workers import BatchError, BrokenWorkerProcess, SerializationError
from procio_workers.abc import Worker, WorkerBackend

from . import _task

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import Self

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover - before Python 3.12
    from typing_extensions import override

__all__ = ["DaskBackend"]

#: Positional arguments at least this large (buffers only) are scattered to the cluster
#: ahead of the call rather than packed into the task itself.
DEFAULT_SCATTER_THRESHOLD = 1 << 20

# How long a waiting thread blocks before it checks whether its call was given up.
_WAIT_SLICE = 0.25

# Client.submit arguments that the backend sets itself and that options may not change.
_RESERVED_SUBMIT_OPTIONS = frozenset({"pure", "key", "actor", "actors"})


# distributed leaves these methods of its Client and Future unannotated.
def _scatter(client: Client, value: object) -> Future[Any]:
    future: Future[Any] = client.scatter(value, hash=False)  # type: ignore[no-untyped-call]
    return future


def _release(future: Future[Any]) -> None:
    future.release()  # type: ignore[no-untyped-call]


def _done(future: Future[Any]) -> bool:
    done: bool = future.done()  # type: ignore[no-untyped-call]
    return done


def _wait_for(future: Future[Any], timeout: float) -> None:
    """Wait until *future* settles, at most *timeout* seconds, without fetching its result."""
    with suppress(DaskTimeoutError):
        future.exception(timeout=timeout)  # type: ignore[no-untyped-call]


def _buffer_size(value: object) -> int:
    """The size in bytes of *value* if it is a buffer, else ``-1``."""
    if isinstance(value, (bytes, bytearray)):
        return len(value)
    try:
        with memoryview(value) as view:  # type: ignore[arg-type]  # probing any object
            return view.nbytes
    except TypeError:
        return -1


class _Outcome:
    """What a finished Dask future produced: a value, or the exception it raised."""

    __slots__ = ("error", "fetch_failed", "value")

    def __init__(
        self, value: object = None, error: BaseException | None = None, fetch_failed: bool = False
    ) -> None:
        self.value = value
        self.error = error
        # The task finished, but its result could not be brought here: Dask could not
        # serialize it on the Dask worker, or it could not be rebuilt in this process.
        self.fetch_failed = fetch_failed


def _settle(
    future: Future[Any], abandoned: threading.Event, unpack: Callable[[Any], object] | None
) -> _Outcome | None:
    """Wait for *future* and fetch its result, in a worker thread (both block).

    The wait goes in slices, so that once *abandoned* is set (the call was cancelled or
    its worker killed) the thread ends soon, whatever becomes of the future; then the
    answer is ``None``. *unpack*, if given, turns the task's return value into the
    outcome's value, here in the thread rather than on the event loop.
    """
    while not _done(future):
        if abandoned.is_set():
            return None
        _wait_for(future, _WAIT_SLICE)
    try:
        value = future.result()
    except Exception as exc:
        lost = isinstance(exc, (KilledWorker, FutureCancelledError, OSError, DaskTimeoutError))
        return _Outcome(error=exc, fetch_failed=future.status == "finished" and not lost)
    return _Outcome(value=value if unpack is None else unpack(value))


#: What a chunk of a map came to: the results of the items that succeeded, in order,
#: then the position and the exception of the item that failed, if one did.
_BatchResults = tuple[list[object], int | None, BaseException | None]


def _unpack_batch(outcome: _task.BatchOutcome) -> _BatchResults:
    """Rebuild the results of a chunk and the exception of its failing item, if any."""
    pickled, failure = outcome
    results: list[object] = []
    for index, data in enumerate(pickled):
        try:
            results.append(_task.loads(data))
        except Exception as exc:
            error = SerializationError(
                f"the result of the call could not be rebuilt in the parent: {exc!r}"
            )
            error.__cause__ = exc
            return results, index, error
    if failure is None:
        return results, None, None
    return results, len(pickled), _task.rebuild(failure)


def _remote_error(error: BaseException) -> BaseException:
    """Turn what a Dask future raised into what the pool's caller should see."""
    if isinstance(error, KilledWorker):
        return BrokenWorkerProcess(f"the Dask worker died while it ran the call: {error}")
    if isinstance(error, FutureCancelledError):
        return BrokenWorkerProcess(f"the Dask cluster dropped the call: {error}")
    if isinstance(error, _task.TaskFailure):
        return _task.rebuild(error)
    # Dask's own failure, not the function's (the function's come as TaskFailure).
    return error


class _Prepared:
    """A call or a chunk of a map, pickled in the parent, ready to submit.

    The function and each item's arguments are pickled apart, so that an item that
    cannot travel fails alone. The large buffers among the arguments are left out:
    they are scattered to the cluster on their own and put back into their *holes* on
    the Dask worker.
    """

    __slots__ = ("failure", "func", "holes", "items", "large")

    def __init__(self, func: bytes) -> None:
        self.func = func
        self.items: list[bytes] = []
        self.holes: list[_task.Hole] = []
        self.large: list[object] = []
        # An item that could not be pickled (its position is len(items)): the items
        # before it run, then it fails with this exception, as in builtin map.
        self.failure: tuple[int, BaseException] | None = None


class DaskBackend(WorkerBackend):
    """Runs a :class:`~procio_workers.WorkerPool`'s calls on a Dask distributed cluster.

    ::

        async with WorkerPool(backend=DaskBackend("tcp://10.0.0.5:8786"), max_workers=64) as pool:
            result = await pool.run_sync(simulate, params)

    Each worker the pool asks for is a slot for one call at a time on the cluster; the
    Dask scheduler chooses which Dask worker runs it. *max_workers* of the pool is thus
    how many calls may run on the cluster at once: match it to the cluster's threads
    (:meth:`cluster_threads`).

    Calls are submitted with ``pure=False``, so every call runs, even with the same
    arguments. A Dask worker that dies while it runs a call (after the scheduler's
    ``distributed.scheduler.allowed-failures`` retries) fails the call with
    :class:`~procio_workers.BrokenWorkerProcess`. Cancelling a call releases its Dask
    future: a call still queued on the cluster never runs, but one already running on a
    Dask worker runs to its end there (Dask cannot interrupt a running task), and its
    result is dropped.

    Works on asyncio, uvloop and Trio alike: the backend drives a synchronous
    :class:`distributed.Client`, whose event loop runs in its own thread.

    Args:
        cluster: where to run calls: a scheduler address such as
            ``"tcp://10.0.0.5:8786"`` or a Dask cluster object (the backend then opens
            a client on entry and closes it on exit), or a synchronous
            :class:`distributed.Client` that the caller keeps open and closes.
        scatter_threshold: positional arguments that are buffers (``bytes``,
            ``bytearray``, ``memoryview``, arrays...) of at least this many bytes are
            scattered to the cluster before the call and released after it, instead of
            travelling inside the task.
        submit_options: further keyword arguments for every
            :meth:`distributed.Client.submit`, such as ``resources``, ``retries``,
            ``priority`` or ``workers`` (not ``pure`` or ``key``).
        client_options: further keyword arguments for the :class:`distributed.Client`
            the backend opens, such as ``timeout`` or ``security``; only with an address
            or a cluster.

    Raises:
        TypeError: if *cluster* is an asynchronous client, or an option is not allowed.
    """

    def __init__(
        self,
        cluster: str | Cluster | Client,
        *,
        scatter_threshold: int = DEFAULT_SCATTER_THRESHOLD,
        submit_options: Mapping[str, Any] | None = None,
        client_options: Mapping[str, Any] | None = None,
    ) -> None:
        submit_options = dict(submit_options or {})
        reserved = _RESERVED_SUBMIT_OPTIONS.intersection(submit_options)
        if reserved:
            raise TypeError(f"submit_options may not set {', '.join(sorted(reserved))}")
        if isinstance(cluster, Client):
            if cluster.asynchronous:
                raise TypeError(
                    "DaskBackend needs a synchronous distributed.Client (its event loop "
                    "runs in a thread of its own); pass the scheduler address instead of "
                    "an asynchronous client"
                )
            if client_options:
                raise TypeError("client_options apply only when DaskBackend opens the client")
        if scatter_threshold < 0:
            raise ValueError("scatter_threshold must not be negative")
        self._target = cluster
        self._client: Client | None = cluster if isinstance(cluster, Client) else None
        self._owns_client = not isinstance(cluster, Client)
        self.scatter_threshold = scatter_threshold
        self.submit_options = submit_options
        self._client_options = dict(client_options or {})
        self._entered = False

    @property
    def client(self) -> Client:
        """The :class:`distributed.Client` the calls go through.

        Raises:
            RuntimeError: if the backend opens its own client and has not been entered.
        """
        if self._client is None:
            raise RuntimeError("the DaskBackend has no client yet: enter it (or its pool) first")
        return self._client

    @override
    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a DaskBackend can be entered only once")
        self._entered = True
        if self._client is None:
            options = {"set_as_default": False, **self._client_options}
            with CancelScope(shield=True):
                # Shielded so that a client, once connected, is never lost to a cancellation.
                self._client = await to_thread.run_sync(partial(Client, self._target, **options))
        return self

    @override
    async def aclose(self) -> None:
        """Close the client if the backend opened it; a client passed in stays open."""
        client = self._client
        if client is None or not self._owns_client:
            return
        with CancelScope(shield=True):
            await to_thread.run_sync(client.close)

    @override
    def prepare_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        """Pickle the call, so that arguments that cannot travel fail before Dask sees them.

        Raises:
            TypeError: if *func* is not callable.
            procio_workers.SerializationError: if the call cannot be pickled.
        """
        prepared = self._prepare(func, [args])
        if prepared.failure is not None:
            raise prepared.failure[1]
        return prepared

    def _prepare(
        self, func: Callable[..., object], args_list: Sequence[tuple[Any, ...]]
    ) -> _Prepared:
        """Pickle *func* and each item's arguments; stop at the first that cannot be."""
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        try:
            prepared = _Prepared(_task.dumps(func))
        except Exception as exc:
            raise SerializationError(f"the function could not be serialized: {exc!r}") from exc
        threshold = self.scatter_threshold
        for item, args in enumerate(args_list):
            holes: list[_task.Hole] = []
            large: list[object] = []
            sent = args
            if threshold and any(_buffer_size(value) >= threshold for value in args):
                kept = list(args)
                for position, value in enumerate(args):
                    if _buffer_size(value) >= threshold:
                        holes.append((item, position))
                        large.append(value)
                        kept[position] = None
                sent = tuple(kept)
            try:
                data = _task.dumps(sent)
            except Exception as exc:
                error = SerializationError(f"the call could not be serialized: {exc!r}")
                error.__cause__ = exc
                prepared.failure = (item, error)
                return prepared
            prepared.items.append(data)
            prepared.holes.extend(holes)
            prepared.large.extend(large)
        return prepared

    @override
    def prepare_batch(
        self, func: Callable[..., object], args_list: Sequence[tuple[Any, ...]]
    ) -> Any:
        """Pickle a chunk of a map for one Dask task, each item's arguments apart.

        An item that cannot be pickled fails alone, after the items before it have run
        (as in builtin map): the chunk is cut short before it.

        Raises:
            TypeError: if *func* is not callable.
            procio_workers.SerializationError: if *func* cannot be pickled.
        """
        return self._prepare(func, args_list)

    @override
    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        if options:
            raise TypeError(
                "Dask workers are started by the cluster: per-call process options "
                f"({', '.join(sorted(options))}) do not apply to DaskBackend"
            )
        return _DaskWorker(self, self.client)

    async def cluster_threads(self) -> int:
        """Return how many calls the cluster can run at once now (its worker threads)."""
        threads = await to_thread.run_sync(self.client.nthreads)
        return sum(cast("Mapping[str, int]", threads).values())

    # -- used by the workers -----------------------------------------------------------

    def _submit(
        self, client: Client, task: Callable[..., object], request: _Prepared, items: object
    ) -> tuple[Future[Any], list[Future[Any]]]:
        """Scatter the large arguments and submit *task* (in a worker thread).

        The task is called as ``task(func, items, holes, *scattered)``.
        """
        scattered: list[Future[Any]] = []
        try:
            for value in request.large:
                scattered.append(_scatter(client, value))
            future = client.submit(
                task,
                request.func,
                items,
                request.holes,
                *scattered,
                pure=False,
                **self.submit_options,
            )
        except BaseException:
            for held in scattered:
                _release(held)
            raise
        return future, scattered


class _DaskWorker(Worker):
    """One call at a time on the cluster, wherever the scheduler places it."""

    def __init__(self, backend: DaskBackend, client: Client) -> None:
        self._backend = backend
        self._client = client
        self._alive = True
        self._running: Future[Any] | None = None
        # The thread that waits for this worker's one running call.
        self._waiter = CapacityLimiter(1)
        self._abandoned = threading.Event()

    @property
    @override
    def alive(self) -> bool:
        return self._alive and self._client.status == "running"

    @override
    async def call(self, request: Any) -> object:
        prepared = cast("_Prepared", request)
        return await self._run(_task.run_call, prepared, prepared.items[0])

    @override
    async def call_batch(self, request: Any) -> list[object]:
        """Run a chunk prepared by :meth:`DaskBackend.prepare_batch` as one Dask task."""
        prepared = cast("_Prepared", request)
        results: list[object] = []
        index: int | None = None
        error: BaseException | None = None
        if prepared.items:
            outcome = await self._run(_task.run_batch, prepared, prepared.items, _unpack_batch)
            results, index, error = cast("_BatchResults", outcome)
        else:
            await checkpoint()
        if error is None and prepared.failure is not None:
            index, error = prepared.failure
        if error is not None:
            raise BatchError(index or 0, results, error)
        return results

    async def _run(
        self,
        task: Callable[..., object],
        request: _Prepared,
        items: object,
        unpack: Callable[[Any], object] | None = None,
    ) -> object:
        """Submit *request* to run as *task* on the cluster and return what it returned."""
        if not self.alive:
            raise BrokenWorkerProcess("the Dask client is closed or this worker was killed")
        backend = self._backend
        with CancelScope(shield=True):
            # Submitted whole or not at all, so that a cancellation never loses a future.
            try:
                future, scattered = await to_thread.run_sync(
                    backend._submit, self._client, task, request, items
                )
            except Exception as exc:
                self._alive = self._client.status == "running"
                raise BrokenWorkerProcess(f"the call could not reach Dask: {exc!r}") from exc
        self._running = future
        self._abandoned = abandoned = threading.Event()
        try:
            outcome = await to_thread.run_sync(
                _settle, future, abandoned, unpack, abandon_on_cancel=True, limiter=self._waiter
            )
        finally:
            # A cancelled call's waiting thread was abandoned: tell it to stop waiting.
            abandoned.set()
            self._running = None
            _release(future)
            for held in scattered:
                _release(held)
        if outcome is None or not self._alive:
            raise BrokenWorkerProcess("the worker was killed while it ran the call")
        if outcome.error is None:
            return outcome.value
        if outcome.fetch_failed:
            raise SerializationError(
                "the result of the call could not be brought back from the Dask worker: "
                f"{outcome.error!r}"
            ) from outcome.error
        if isinstance(outcome.error, (KilledWorker, FutureCancelledError)):
            self._alive = False
        raise _remote_error(outcome.error)

    @override
    def kill(self) -> None:
        """Release the running call's future and wake its caller.

        A call still queued on the cluster never runs; one already running on a Dask
        worker runs to its end there (Dask cannot interrupt it) and its result is dropped.
        """
        self._alive = False
        self._abandoned.set()
        if self._running is not None:
            _release(self._running)

    @override
    async def aclose(self) -> None:
        self.kill()
        await checkpoint()
