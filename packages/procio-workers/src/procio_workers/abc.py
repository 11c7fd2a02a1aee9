"""The extension points of procio_workers: serializers, launchers and worker backends.

Each is a small abstract class with defaults for everything but its core. Third-party
serializers and launchers may also register themselves under the entry-point groups
``procio_workers.serializers`` and ``procio_workers.launchers`` so that they can be chosen
by name, e.g. ``WorkerPool(launcher="nice")``. The page "Extending procio-workers" walks
through each.
"""

from __future__ import annotations

import sys
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, ClassVar, Final

from anyio.abc import Process

from ._errors import BatchError, BrokenWorkerProcess

if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import Self

if sys.version_info >= (3, 12):
    from collections.abc import Buffer
else:  # pragma: no cover - before Python 3.12
    from typing_extensions import Buffer

__all__ = [
    "PENDING",
    "Buffer",
    "Serializer",
    "Launcher",
    "Worker",
    "WorkerBackend",
    "SERIALIZER_ENTRY_POINTS",
    "LAUNCHER_ENTRY_POINTS",
]

#: Entry-point group for :class:`Serializer` classes, each constructible without arguments.
SERIALIZER_ENTRY_POINTS = "procio_workers.serializers"
#: Entry-point group for :class:`Launcher` classes, each constructible without arguments.
LAUNCHER_ENTRY_POINTS = "procio_workers.launchers"


class _Pending:
    __slots__ = ()

    def __repr__(self) -> str:
        return "procio_workers.abc.PENDING"


#: What :meth:`Worker.reply_nowait` returns while the call's outcome is not there yet:
#: the pool then awaits :meth:`Worker.finish_call`.
PENDING: Final[object] = _Pending()


class Serializer(ABC):
    """Turns a call into bytes for a worker, and a worker's reply back into objects.

    The parent side of the pair; the worker side is the *codec* named by
    :attr:`worker_codec`, which the worker program loads by name. Both speak in
    *segments*: a list of buffers whose first item is the main payload, the others
    out-of-band buffers (see the page "The worker protocol").
    """

    #: The codec the worker uses to read calls and write replies: ``"pickle"`` or
    #: ``"cloudpickle"`` (built into the worker program), or ``"module:attribute"``
    #: naming a zero-argument factory importable in the worker whose product has
    #: ``loads(segments) -> value`` and ``dumps(value) -> list of buffers``.
    worker_codec: ClassVar[str] = "pickle"

    @abstractmethod
    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        """Serialize a call of *func* with positional *args* into segments.

        Raises:
            Exception: any error here is reported as a
                :class:`~procio_workers.SerializationError` before a worker is reserved.
        """

    def dump_batch(
        self, func: Callable[..., object], calls: Sequence[tuple[Any, ...]]
    ) -> Sequence[Buffer]:
        """Serialize a chunk of calls of *func*, one argument tuple per call.

        The default is :meth:`dump_call` with the list of argument tuples in place of
        the arguments, which is what the worker's codec decodes for a ``BATCH``.
        """
        return self.dump_call(func, list(calls))  # type: ignore[arg-type]

    @abstractmethod
    def load_reply(self, segments: Sequence[memoryview]) -> object:
        """Rebuild the value or the exception a worker sent back as *segments*."""


class Launcher(ABC):  # noqa: B024 - every step has a default; override any of them
    """Starts a worker process: which interpreter, environment and wrappers.

    The default runs the worker command as it is, through
    :func:`procio_process.open_process`. Override :meth:`command` to wrap it (``nice``,
    ``taskset``, a container runtime), :meth:`environment` to change its environment,
    or :meth:`launch` to start it some other way entirely.
    """

    def command(self, argv: Sequence[str]) -> list[str]:
        """Return the command line that runs the worker program *argv*."""
        return list(argv)

    def environment(self, env: Mapping[str, str] | None) -> Mapping[str, str] | None:
        """Return the worker's environment given the requested one (``None``: inherit)."""
        return env

    async def launch(
        self,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int],
        stdout: int,
        stderr: int,
        env: Mapping[str, str] | None,
        popen_kwargs: Mapping[str, Any],
    ) -> Process:
        """Start the worker and return its process handle.

        Args:
            argv: the worker program's command line, before :meth:`command`.
            pass_fds: the protocol pipe ends the worker must inherit, at the same
                numbers.
            stdout: the descriptor to use as the worker's standard output.
            stderr: the descriptor to use as the worker's standard error.
            env: the requested environment, before :meth:`environment`.
            popen_kwargs: further :class:`subprocess.Popen` keyword arguments.
        """
        from procio_process import DEVNULL, open_process

        return await open_process(
            self.command(argv),
            stdin=DEVNULL,
            stdout=stdout,
            stderr=stderr,
            env=self.environment(env),
            pass_fds=pass_fds,
            **popen_kwargs,
        )


class Worker(ABC):
    """One worker that runs calls one at a time, as handed out by a backend."""

    #: The worker's process id, when it is a local process.
    pid: int | None = None

    @property
    @abstractmethod
    def alive(self) -> bool:
        """Whether the worker can still take calls."""

    @abstractmethod
    async def call(self, request: Any) -> object:
        """Run one call prepared by :meth:`WorkerBackend.prepare_call` and return its result.

        Raises:
            procio_workers.BrokenWorkerProcess: if the worker was lost; the pool then
                discards it. Raise it with ``started=False`` when the request never
                reached the worker: the pool then runs the call on another worker
                instead of failing it.
            Exception: whatever the function raised, rebuilt in the parent.
        """

    # The fast path. A call that is answered before the caller would wait costs no trip
    # through the event loop and no cancel scope: the pool tries these first, and falls
    # back to call() for a worker that declines.

    def send_nowait(self, request: Any) -> bool:
        """Start a call without waiting, if this worker can; return whether it did.

        The pool calls this first for every call, on the event loop's thread, so it
        must not block. ``False`` (the default) declines: the pool then runs the call
        with :meth:`call`. ``True`` means the worker took the call over, even if part of
        it still has to be sent: the pool lets other tasks run once, then asks
        :meth:`reply_nowait` for the outcome and, if that returns :data:`PENDING`,
        awaits :meth:`finish_call`, and never calls :meth:`call` for it.

        Raises:
            procio_workers.BrokenWorkerProcess: as for :meth:`call`, with
                ``started=False`` if the worker is known to be gone before the call
                reached it.
        """
        return False

    @property
    def reply_may_be_quick(self) -> bool:
        """Whether the reply to the call :meth:`send_nowait` just took may come at once.

        Read by the pool right after :meth:`send_nowait` returned ``True``. ``True``
        (the default): the pool lets other tasks run once, then asks
        :meth:`reply_nowait`. ``False``: the reply cannot be there that soon (the
        worker was asleep, and takes longer to wake than a pass of the event loop);
        the pool then awaits :meth:`finish_call` at once, and never calls
        :meth:`reply_nowait` for this call. :meth:`finish_call` must then let other
        tasks run before it returns (wait for the reply, or yield once): that wait is
        the call's schedule point.
        """
        return True

    def reply_nowait(self) -> object:
        """Return the outcome of the call :meth:`send_nowait` took, or :data:`PENDING`.

        Called once per call, right after the pool's schedule point; it must not block.
        The default returns :data:`PENDING`.

        Raises:
            Exception: whatever the function raised, as for :meth:`call`.
        """
        return PENDING

    async def finish_call(self) -> object:
        """Wait for the outcome of the call :meth:`send_nowait` took and return it.

        Awaited when :meth:`reply_nowait` returned :data:`PENDING`; it sends what is
        left of the request, if anything. It raises as :meth:`call` does, and it runs
        shielded from cancellation unless the call is ``cancellable``, in which case a
        cancellation is followed by :meth:`kill`.

        Raises:
            NotImplementedError: the default; a worker whose :meth:`send_nowait` can
                return ``True`` must override this.
        """
        raise NotImplementedError(f"{type(self).__name__} has no finish_call")

    async def call_batch(self, request: Any) -> list[object]:
        """Run a batch prepared by :meth:`WorkerBackend.prepare_batch`; return the results.

        The default runs the calls of the default :meth:`WorkerBackend.prepare_batch`
        one after the other with :meth:`call`. A backend that sends a whole batch as one
        task overrides both.

        Raises:
            procio_workers.BatchError: if an item raised an exception (the function's
                error, or its result could not travel): it carries the item's position,
                the results of the items before it, and the exception.
            procio_workers.BrokenWorkerProcess: as for :meth:`call`; set ``started`` to
                ``False`` only if no item reached the worker.
        """
        results: list[object] = []
        for index, call in enumerate(request):
            try:
                results.append(await self.call(call))
            except BrokenWorkerProcess as exc:
                if index:
                    exc.started = True  # earlier items ran: the batch cannot move
                raise
            except Exception as exc:
                raise BatchError(index, results, exc) from None
        return results

    # -- pipelined batches (optional) ------------------------------------------------
    #
    # A map keeps its worker busy by sending the next batch before the running one has
    # answered. A worker that can hold one batch queued behind the one it runs says so
    # with ``pipelines`` and implements the methods below; the pool then drives it as:
    # send_batch(first); queue_batch(next); receive_batch() (first's answer); then
    # finish_queued() and receive_batch() (next's answer), and so on. When the map is
    # left early, try_drop_queued() (or drop_queued(), once no answer is awaited) asks
    # the worker to answer the queued batch with no results, without running it.

    @property
    def pipelines(self) -> bool:
        """Whether this worker takes a batch queued behind the one it runs.

        ``False`` by default: the pool then sends one batch at a time with
        :meth:`call_batch`.
        """
        return False

    async def send_batch(self, request: Any) -> None:
        """Send a batch to an idle worker; its answer is read by :meth:`receive_batch`.

        Raises:
            procio_workers.BrokenWorkerProcess: as for :meth:`call` (``started=False``
                if the worker had exited while idle).
        """
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    def queue_batch(self, request: Any) -> None:
        """Send a batch behind the running one, without waiting.

        What the pipe does not take at once is sent by :meth:`finish_queued`, once the
        running batch's answer has been read.
        """
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    async def finish_queued(self) -> None:
        """Send what :meth:`queue_batch` could not send at once (nothing if all went)."""
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    async def receive_batch(self) -> list[object]:
        """Read the answer to the oldest batch sent; raises as :meth:`call_batch`."""
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    async def wait_for_answer(self) -> None:
        """Wait until an answer starts to arrive, or the worker is gone.

        Unlike :meth:`receive_batch`, it may be cancelled without losing anything.
        """
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    def try_drop_queued(self) -> bool:
        """Ask the worker, without waiting, to drop the queued batch unless it began it.

        ``False`` if that cannot be asked now. The batch's answer is still to be read.
        """
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    async def drop_queued(self) -> None:
        """As :meth:`try_drop_queued`, waiting for room; only while no answer is awaited."""
        raise NotImplementedError(f"{type(self).__name__} does not pipeline batches")

    def stream(self, request: Any, *, cancellable: bool = False) -> AsyncIterator[list[object]]:
        """Run a generator call prepared by :meth:`WorkerBackend.prepare_stream`.

        Returns an async iterator of groups of the items the generator yields, in order.
        It must not run ahead of its reader by more than a bounded number of items, and
        closing it (``aclose()``) must stop the generator in the worker; an exception
        the generator raises comes out of it after the items yielded before it. With
        *cancellable*, a cancellation that reaches it while it waits for the worker
        kills the worker at once instead of closing the generator there.

        Raises:
            NotImplementedError: the default: this backend cannot stream generators.
        """
        raise NotImplementedError(f"{type(self).__name__} cannot stream generators")

    @abstractmethod
    def kill(self) -> None:
        """Stop the worker at once, abandoning any call (used on cancellation)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Retire the worker gracefully (or finish a kill) and release all it holds."""


class WorkerBackend(ABC):
    """Where a :class:`~procio_workers.WorkerPool` gets its workers from.

    The pool keeps the policy (limits, reuse, idle timeout, retirement, figures); the
    backend starts workers and carries calls to them. A backend is an async context
    manager, entered and left by the pool.
    """

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:  # noqa: B027 - a default, not an abstract method
        """Release whatever the backend holds; the pool closes its workers first."""

    def prepare_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        """Turn a call into the request that :meth:`Worker.call` takes.

        Runs before a worker is reserved, so bad input fails early; the default keeps
        the call as it is.
        """
        return (func, args)

    def prepare_batch(
        self, func: Callable[..., object], args_list: Sequence[tuple[Any, ...]]
    ) -> Any:
        """Turn the calls of one chunk of a map into the request of :meth:`Worker.call_batch`.

        The default prepares each call with :meth:`prepare_call`: the items then travel
        one call at a time.
        """
        return [self.prepare_call(func, args) for args in args_list]

    def prepare_stream(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        """Turn a call of a generator function into the request of :meth:`Worker.stream`.

        The default prepares it as an ordinary call.
        """
        return self.prepare_call(func, args)

    @abstractmethod
    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        """Start one worker and return it once it can take calls.

        Args:
            options: per-worker start options (the :class:`subprocess.Popen` keyword
                arguments given to ``to_process.run_sync``); empty for ordinary,
                reusable workers. A backend that cannot honour them raises
                :exc:`TypeError`.
        """

    async def prestart_worker(self) -> Worker:
        """Start one ordinary worker ahead of need (``WorkerPool(prestart=...)``).

        No call waits for it, so a backend may make it ready for calls to come: procio's
        process backend has it run the parent's ``__main__`` module at once, where a
        worker started for a call runs that module only once a call needs it. The
        default is :meth:`start_worker` with no options.
        """
        return await self.start_worker({})
