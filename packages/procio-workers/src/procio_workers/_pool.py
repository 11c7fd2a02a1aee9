"""Pool policy: limits, reuse (most recently used first), idle timeout, retirement, figures.

Nothing here knows how a worker is started or how a call travels: that is the
backend's business (``_process_backend`` by default, or any :class:`WorkerBackend`).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Mapping
from contextlib import AsyncExitStack
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

import anyio
from anyio import CancelScope, CapacityLimiter, current_time, get_cancelled_exc_class
from anyio.abc import TaskGroup
from anyio.lowlevel import checkpoint_if_cancelled

from . import _wire
from ._errors import BrokenWorkerProcess
from ._hosting import loop_clock
from ._process_backend import PENDING, OutputHandler, ProcessBackend, ProcessWorker
from ._registry import resolve_launcher, resolve_serializer
from .abc import Launcher, Serializer, Worker, WorkerBackend

if sys.version_info >= (3, 11):
    from typing import Self, TypeVarTuple, Unpack
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import Self, TypeVarTuple, Unpack

T_Retval = TypeVar("T_Retval")
PosArgsT = TypeVarTuple("PosArgsT")

#: The seed's idle lifetime of a worker: five minutes.
DEFAULT_IDLE_TIMEOUT = 300.0


@dataclass(frozen=True)
class PoolStatistics:
    """Figures of a :class:`WorkerPool` at one moment.

    Attributes:
        workers: workers alive now (busy or idle).
        busy: workers running a call now.
        idle: workers waiting for a call now.
        started: workers started since the pool opened.
        calls: calls finished, whether they returned or raised.
        failures: calls that raised (the function's error, a lost worker, bad input).
        broken: workers lost while they ran a call.
    """

    workers: int
    busy: int
    idle: int
    started: int
    calls: int
    failures: int
    broken: int


class _Slot:
    __slots__ = ("idle_since", "reusable", "tasks", "worker")

    def __init__(self, worker: Worker, *, reusable: bool) -> None:
        self.worker = worker
        self.reusable = reusable
        self.tasks = 0
        self.idle_since = 0.0


class WorkerPool:
    """Worker processes that run Python functions for AnyIO code.

    Use it as an async context manager; every worker it started has exited (and been
    reaped) when the ``async with`` block ends::

        async with WorkerPool(max_workers=4) as pool:
            result = await pool.run_sync(pow, 2, 100)

    Args:
        max_workers: the most workers running at once, hence the most concurrent calls
            (default: the number of CPUs).
        idle_timeout: seconds after which an idle worker exits, enforced by a timer;
            ``None`` keeps idle workers until the pool closes.
        initializer: a function every new worker runs once before its first call.
        initargs: the positional arguments of *initializer*.
        max_tasks_per_worker: retire a worker after this many calls (``None``: never).
        prestart: how many workers to start when the pool opens.
        python: the interpreter that runs the workers (default: this one).
        serializer: a :class:`~procio_workers.abc.Serializer`, or the name of one
            (``"pickle"``, the default, ``"cloudpickle"``, or an entry point).
        launcher: a :class:`~procio_workers.abc.Launcher`, or the name of one
            registered as an entry point.
        output: called with ``1`` or ``2`` and the bytes a worker wrote to its
            standard output or error (default: written to this process's
            ``sys.stdout`` / ``sys.stderr``).
        max_frame_length: the largest message accepted from a worker, in bytes.
        backend: run calls through this :class:`~procio_workers.abc.WorkerBackend`
            instead of local processes; *python*, *serializer*, *launcher*, *output*
            and *max_frame_length* then do not apply.
    """

    def __init__(
        self,
        max_workers: int | None = None,
        *,
        idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        max_tasks_per_worker: int | None = None,
        prestart: int = 0,
        python: str | os.PathLike[str] | None = None,
        serializer: Serializer | str | None = None,
        launcher: Launcher | str | None = None,
        output: OutputHandler | None = None,
        max_frame_length: int = _wire.DEFAULT_MAX_FRAME_LENGTH,
        backend: WorkerBackend | None = None,
    ) -> None:
        if max_workers is not None and max_workers < 1:
            raise ValueError("max_workers must be at least 1")
        if max_tasks_per_worker is not None and max_tasks_per_worker < 1:
            raise ValueError("max_tasks_per_worker must be at least 1")
        if idle_timeout is not None and idle_timeout < 0:
            raise ValueError("idle_timeout must not be negative")
        if backend is None:
            backend = ProcessBackend(
                python=python,
                serializer=resolve_serializer(serializer),
                launcher=resolve_launcher(launcher),
                output=output,
                max_frame_length=max_frame_length,
            )
        elif any(x is not None for x in (python, serializer, launcher, output)):
            raise TypeError(
                "python, serializer, launcher and output configure the default "
                "backend; they cannot be combined with backend="
            )
        self.max_workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
        self.idle_timeout = idle_timeout
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.max_tasks_per_worker = max_tasks_per_worker
        self.prestart = min(prestart, self.max_workers)
        self.backend = backend
        self._limiter: CapacityLimiter | None = CapacityLimiter(self.max_workers)
        self._slots: set[_Slot] = set()
        self._retiring: set[_Slot] = set()  # dropped, still being closed
        self._idle: list[_Slot] = []  # most recently used last
        self._idle_changed = anyio.Event()
        self._timer_waits_for_idle = True
        self._task_group: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._closed = False
        self._clock: Callable[[], float] = current_time
        self._started = 0
        self._calls = 0
        self._failures = 0
        self._broken = 0

    def _unbounded(self) -> None:
        """Let the caller's limiter alone decide (the default pool of ``to_process``)."""
        self._limiter = None
        self.max_workers = sys.maxsize

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._closed:
            raise RuntimeError("a WorkerPool can be entered only once")
        # The event loop's clock, as anyio.current_time reads it, without the lookup.
        self._clock = loop_clock()
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.backend)
            stack.push_async_callback(self._close_workers)
            stack.callback(self._forget_task_group)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            self._task_group.start_soon(self._expire_idle)
            if self.prestart:
                async with anyio.create_task_group() as starters:
                    for _ in range(self.prestart):
                        starters.start_soon(self._prestart_one)
            self._stack = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the pool: every worker exits and is reaped before this returns."""
        self._closed = True
        stack, self._stack = self._stack, None
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        if stack is not None:
            # Each step that must finish shields itself; the task groups in the stack
            # must be left from the scope they were entered in.
            await stack.aclose()

    def _forget_task_group(self) -> None:
        self._task_group = None

    async def _close_workers(self) -> None:
        self._closed = True
        busy = self._slots.difference(self._idle)
        slots = self._slots | self._retiring
        self._slots.clear()
        self._idle.clear()
        self._retiring.clear()
        for slot in busy:
            # Only a call that outlived the pool's block can still be running here.
            slot.worker.kill()
        with CancelScope(shield=True):
            async with anyio.create_task_group() as tg:
                for slot in slots:
                    tg.start_soon(slot.worker.aclose)

    async def _finish(self, slot: _Slot) -> None:
        with CancelScope(shield=True):
            await slot.worker.aclose()
        # Not in a finally: on asyncio the loop's shutdown cancels every task, shielded
        # or not, and a worker whose closing was cut short must be closed again by
        # _close_workers.
        self._retiring.discard(slot)

    async def _prestart_one(self) -> None:
        slot = await self._start(reusable=True, options={})
        self._park(slot)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("the worker pool is closed")
        if self._task_group is None:
            raise RuntimeError("use the WorkerPool as an async context manager first")

    # -- figures -------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """Return the pool's figures now."""
        idle = len(self._idle)
        return PoolStatistics(
            workers=len(self._slots),
            busy=len(self._slots) - idle,
            idle=idle,
            started=self._started,
            calls=self._calls,
            failures=self._failures,
            broken=self._broken,
        )

    # -- calls ---------------------------------------------------------------------

    async def run_sync(
        self,
        func: Callable[[Unpack[PosArgsT]], T_Retval],
        *args: Unpack[PosArgsT],
        cancellable: bool = False,
    ) -> T_Retval:
        """Call ``func(*args)`` in a worker and return its result.

        The arguments are serialized before a worker is reserved, so bad input fails
        at once. The most recently used idle worker takes the call, or a new one starts
        if fewer than *max_workers* run.

        Args:
            func: the function to call; with the default serializer it must be
                importable in the worker.
            args: its positional arguments.
            cancellable: if the caller is cancelled while the call runs, kill the
                worker and raise the cancellation at once; by default the call is
                shielded and runs to completion.

        Raises:
            BrokenWorkerProcess: if the worker died or broke the protocol.
            SerializationError: if the arguments or the result could not travel.
            WorkerError: if the function raised ``SystemExit`` or another exception
                that cannot be re-raised here.
        """
        return await self._run(func, args, cancellable=cancellable, options={}, limiter=None)  # type: ignore[return-value]

    async def _run(
        self,
        func: Callable[..., object],
        args: tuple[Any, ...],
        *,
        cancellable: bool,
        options: Mapping[str, Any],
        limiter: CapacityLimiter | None,
    ) -> object:
        await checkpoint_if_cancelled()
        self._check_open()
        request = self.backend.prepare_call(func, args)
        held: list[CapacityLimiter] = []
        try:
            for each in (limiter, self._limiter):
                if each is not None:
                    # A free token is taken without a trip through the event loop.
                    try:
                        each.acquire_nowait()
                    except anyio.WouldBlock:
                        await each.acquire()
                    held.append(each)
            for attempt in range(2):
                slot = await self._acquire(options)
                try:
                    return await self._call(slot, request, cancellable)
                except BrokenWorkerProcess as exc:
                    # A worker found dead before the call reached it (it died while
                    # idle): the call itself has not failed; run it on another one.
                    if exc.started or attempt:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns
        finally:
            for each in reversed(held):
                each.release()

    async def _acquire(self, options: Mapping[str, Any]) -> _Slot:
        if options:
            return await self._start(reusable=False, options=options)
        while self._idle:
            slot = self._idle.pop()
            if slot.worker.alive:
                return slot
            self._drop(slot)
        return await self._start(reusable=True, options={})

    async def _start(self, *, reusable: bool, options: Mapping[str, Any]) -> _Slot:
        self._check_open()
        worker = await self.backend.start_worker(options)
        slot = _Slot(worker, reusable=reusable)
        self._slots.add(slot)
        self._started += 1
        if self.initializer is not None:
            try:
                request = self.backend.prepare_call(self.initializer, self.initargs)
                await worker.call(request)
            except BaseException as exc:
                self._drop(slot)
                if isinstance(exc, (get_cancelled_exc_class(), BrokenWorkerProcess)):
                    raise
                raise BrokenWorkerProcess(
                    f"the initializer failed: {exc!r}", pid=worker.pid
                ) from exc
        return slot

    async def _call(self, slot: _Slot, request: Any, cancellable: bool) -> object:
        worker = slot.worker
        try:
            # A local worker often answers before the caller would wait: the call then
            # needs no cancel scope (nothing can cancel it), which is worth having. Not
            # for a subclass, whose call() may do more.
            local = worker if type(worker) is ProcessWorker else None
            result = local.call_nowait(request) if local is not None else PENDING
            if result is PENDING:
                with CancelScope(shield=not cancellable):
                    if local is not None:
                        result = await local.finish_call()
                    else:
                        result = await worker.call(request)
        except get_cancelled_exc_class():
            worker.kill()
            self._drop(slot)
            raise
        except BaseException as exc:
            if isinstance(exc, BrokenWorkerProcess) and not exc.started:
                self._broken += 1
                self._drop(slot)
                raise
            self._calls += 1
            self._failures += 1
            if worker.alive:
                self._release(slot)
            else:
                self._broken += 1
                self._drop(slot)
            raise
        self._calls += 1
        self._release(slot)
        return result

    def _release(self, slot: _Slot) -> None:
        slot.tasks += 1
        limit = self.max_tasks_per_worker
        if self._closed or not slot.reusable or (limit is not None and slot.tasks >= limit):
            self._drop(slot)
        else:
            self._park(slot)

    def _park(self, slot: _Slot) -> None:
        if self._closed:
            self._drop(slot)
            return
        slot.idle_since = self._clock()
        self._idle.append(slot)
        # Only a timer with nothing to watch needs waking: otherwise it already sleeps
        # until an expiry no later than this worker's.
        if self._timer_waits_for_idle:
            self._idle_changed.set()

    def _drop(self, slot: _Slot) -> None:
        """Forget a worker and close it in the background (it is reaped either way)."""
        self._slots.discard(slot)
        if slot in self._idle:
            self._idle.remove(slot)
        self._retiring.add(slot)
        if self._task_group is not None:
            self._task_group.start_soon(self._finish, slot)
        else:
            # Closing: _close_workers reaps everything in _retiring.
            slot.worker.kill()

    async def _expire_idle(self) -> None:
        while True:
            timeout = self.idle_timeout
            deadline = math.inf
            if timeout is not None:
                now = current_time()
                for slot in [s for s in self._idle if now - s.idle_since >= timeout]:
                    self._drop(slot)
                if self._idle:
                    deadline = min(slot.idle_since for slot in self._idle) + timeout
            if deadline == math.inf and self._slots and timeout is not None:
                # Busy workers will be parked again soon: look again after one timeout
                # rather than being woken by every call that ends.
                deadline = current_time() + timeout
            self._idle_changed = anyio.Event()
            self._timer_waits_for_idle = deadline == math.inf
            with anyio.move_on_after(deadline - current_time()):
                await self._idle_changed.wait()
