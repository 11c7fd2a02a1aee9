"""Pool policy: limits, reuse (most recently used first), idle timeout, retirement, figures.

Nothing here knows how a worker is started or how a call travels: that is the
backend's business (``_process_backend`` by default, or any :class:`WorkerBackend`).
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import sys
import time
import weakref
from collections import deque
from collections.abc import AsyncIterable, Awaitable, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

import anyio
from anyio import (
    CancelScope,
    CapacityLimiter,
    ClosedResourceError,
    current_time,
    get_cancelled_exc_class,
)
from anyio.abc import TaskGroup
from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled
from procio_process._run import lone_interrupt

from . import _wire
from ._errors import BatchError, BrokenWorkerProcess, SerializationError
from ._hosting import (
    checkpoint_halves,
    interrupts_go_to_main_task,
    logger,
    loop_clock,
    wait_through_interrupts,
)
from ._mapping import MapResults, StreamResults, _MapCore, _StreamCore
from ._process_backend import OutputHandler, ProcessBackend
from ._registry import resolve_launcher, resolve_serializer
from ._tokens import Tokens
from .abc import PENDING, Launcher, Serializer, Worker, WorkerBackend

if sys.version_info >= (3, 11):
    from typing import Self, TypeVarTuple, Unpack
else:  # pragma: no cover - Python 3.10 only
    from typing_extensions import Self, TypeVarTuple, Unpack

T_Retval = TypeVar("T_Retval")
_V = TypeVar("_V")
PosArgsT = TypeVarTuple("PosArgsT")

#: The seed's idle lifetime of a worker: five minutes.
DEFAULT_IDLE_TIMEOUT = 300.0
#: The most workers one call tries when each one it gets turns out to have died while
#: idle, before the call reached it (the call fails after that many).
_MAX_ATTEMPTS = 16
_SCHEDSTAT = sys.platform.startswith("linux")
#: Where ``/proc`` keeps the calling thread's own entries.
THIS_THREAD = "thread-self"
#: The most maps that run every lane, after one that ran fewer by turns with the event
#: loop, before fewer lanes are tried again (see WorkerPool._lanes_ran_by_turns).
MOST_MAPS_OF_EVERY_LANE = 64

_CLOSED_DURING_START = "the worker pool was closed while the call started its worker"


@dataclass(frozen=True)
class PoolStatistics:
    """Figures of a :class:`WorkerPool` at one moment.

    Attributes:
        workers: workers alive now (busy or idle). A worker killed during a call
            counts until the pool has reaped it, so this can briefly exceed
            ``max_workers`` while a new worker takes the killed one's place.
        busy: workers running a call now, and workers killed during a call (it was
            cancelled with ``cancellable=True``, or interrupted) that the pool has not
            reaped yet: a SIGKILL takes effect when the system gets to it, and until
            then such a process may still run the call's code. ``busy == 0`` means
            that no process of the pool runs a call.
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
    __slots__ = ("closed_by_pool", "idle_since", "reaped", "reusable", "tasks", "worker")

    def __init__(self, worker: Worker, *, reusable: bool) -> None:
        self.worker = worker
        self.reusable = reusable
        self.tasks = 0
        self.idle_since = 0.0
        # Set when the pool killed the worker because it closed under a running call.
        self.closed_by_pool = False
        # Made when a call's worker is killed; set once the pool has reaped it.
        self.reaped: anyio.Event | None = None


def _cpu_seconds(pid: int | str | None, fd: int = -1) -> tuple[float, float] | None:
    """Seconds process *pid* has run on a CPU, and has waited for one.

    Where the system tells: Linux's ``/proc/<pid>/schedstat``, in nanoseconds. *pid*
    may be :data:`THIS_THREAD`, for the calling thread. *fd*, if given, is that file held
    open (see :func:`_open_schedstat`): read again from its start, without the opening
    and closing that cost more than the read (a few microseconds each, several times per
    chunk of a map).
    """
    if pid is None or not _SCHEDSTAT:
        return None
    held = fd >= 0
    if not held:
        fd = _open_schedstat(pid)
        if fd < 0:
            return None
    try:
        ran, waited = os.pread(fd, 64, 0).split()[:2]
        return int(ran) / 1e9, int(waited) / 1e9
    except (OSError, ValueError):
        return None
    finally:
        if not held:
            os.close(fd)


def _open_schedstat(pid: int | str | None) -> int:
    """A descriptor of ``/proc/<pid>/schedstat``, or -1 where there is none to open.

    Opened for the thread itself with :data:`THIS_THREAD`, it stays that thread's.
    """
    if pid is None or not _SCHEDSTAT:
        return -1
    try:
        return os.open(f"/proc/{pid}/schedstat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return -1


def _recall(memory: weakref.WeakKeyDictionary[Any, _V], func: Callable[..., object]) -> _V | None:
    """What *memory* keeps for *func*, if anything."""
    try:
        return memory.get(func)
    except TypeError:  # not hashable, or no weak reference to it can be made
        return None


def _remember(
    memory: weakref.WeakKeyDictionary[Any, _V], func: Callable[..., object], value: _V
) -> None:
    """Keep *value* for *func* in *memory*, if *func* can be a weak key."""
    with suppress(TypeError):
        memory[func] = value


def _check_int(name: str, value: object, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        expected = "an int or None" if optional else "an int"
        raise TypeError(f"{name} must be {expected}, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")


def _check_types(
    *,
    idle_timeout: object,
    initializer: object,
    initargs: object,
    output: object,
    python: object,
    backend: object,
) -> None:
    """Refuse the arguments of a WorkerPool that could only fail later, at each call."""
    if idle_timeout is not None:
        if isinstance(idle_timeout, bool) or not isinstance(idle_timeout, numbers.Real):
            raise TypeError(
                "idle_timeout must be a number of seconds or None, "
                f"not {type(idle_timeout).__name__}"
            )
        if not float(idle_timeout) >= 0:  # also refuses NaN
            raise ValueError(f"idle_timeout must not be negative, not {idle_timeout}")
    if initializer is not None and not callable(initializer):
        raise TypeError(f"initializer must be callable or None, not {type(initializer).__name__}")
    if not isinstance(initargs, tuple):
        raise TypeError(f"initargs must be a tuple, not {type(initargs).__name__}")
    if output is not None and not callable(output):
        raise TypeError(f"output must be callable or None, not {type(output).__name__}")
    if python is not None and not isinstance(python, (str, os.PathLike)):
        raise TypeError(f"python must be a path, not {type(python).__name__}")
    if backend is not None and not isinstance(backend, WorkerBackend):
        raise TypeError(f"backend must be a WorkerBackend, not {type(backend).__name__}")


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
        prestart: how many workers to start when the pool opens. With the process
            backend, these run the parent's ``__main__`` module as soon as they have
            started (see :meth:`~procio_workers.abc.WorkerBackend.prestart_worker`);
            a worker started for a call runs it only once a call needs it.
        python: the interpreter that runs the workers (default: this one).
        serializer: a :class:`~procio_workers.abc.Serializer`, or the name of one
            (``"pickle"``, the default, ``"cloudpickle"``, or an entry point).
        launcher: a :class:`~procio_workers.abc.Launcher`, or the name of one
            registered as an entry point.
        output: called with ``1`` or ``2`` and the bytes a worker wrote to its
            standard output or error (default: written to this process's
            ``sys.stdout`` / ``sys.stderr``).
        max_frame_length: the largest message accepted from a worker, in bytes.
        idle_poll: how long a worker polls for its next call after answering one:
            ``"adaptive"`` (the default: 200 µs, only while calls come back to back),
            a number of seconds (at most 1) after every answer, or ``0``: never poll,
            sleep at once (battery power, CPU quotas, shared hosts). See the
            :class:`~procio_workers.ProcessBackend` argument of that name.
        backend: run calls through this :class:`~procio_workers.abc.WorkerBackend`
            instead of local processes; *python*, *serializer*, *launcher*, *output*,
            *max_frame_length* and *idle_poll* then do not apply.

    Raises:
        TypeError: if an argument has the wrong type (a non-callable *initializer*,
            *initargs* that is not a tuple, a *max_workers* that is not an int, ...).
        ValueError: if an argument is out of range (*max_workers* or
            *max_tasks_per_worker* below 1, a negative *idle_timeout* or *prestart*)
            or names no installed serializer or launcher.
    """

    # Over 300 lines, knowingly: the docstring and the checked constructor are a third
    # of it, and the rest is one policy (which worker takes a call, and what becomes of
    # it afterwards) that run_sync, map and stream all go through. The frames, the
    # workers' pipes and their lifecycle live with the backend, not here.

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
        idle_poll: float | Literal["adaptive"] = "adaptive",
        backend: WorkerBackend | None = None,
    ) -> None:
        _check_int("max_workers", max_workers, minimum=1, optional=True)
        _check_int("max_tasks_per_worker", max_tasks_per_worker, minimum=1, optional=True)
        _check_int("prestart", prestart, minimum=0)
        _check_int("max_frame_length", max_frame_length, minimum=1)
        _check_types(
            idle_timeout=idle_timeout,
            initializer=initializer,
            initargs=initargs,
            output=output,
            python=python,
            backend=backend,
        )
        if backend is None:
            try:
                resolved_serializer = resolve_serializer(serializer)
                resolved_launcher = resolve_launcher(launcher)
            except LookupError as exc:
                raise ValueError(str(exc)) from None
            backend = ProcessBackend(
                python=python,
                serializer=resolved_serializer,
                launcher=resolved_launcher,
                output=output,
                max_frame_length=max_frame_length,
                idle_poll=idle_poll,
            )
        elif any(x is not None for x in (python, serializer, launcher, output)) or (
            idle_poll != "adaptive"
        ):
            raise TypeError(
                "python, serializer, launcher, output and idle_poll configure the default "
                "backend; they cannot be combined with backend="
            )
        self.max_workers = max_workers if max_workers is not None else (os.cpu_count() or 1)
        self.idle_timeout: float | None = None if idle_timeout is None else float(idle_timeout)
        self.initializer = initializer
        self.initargs = initargs
        self.max_tasks_per_worker = max_tasks_per_worker
        self.prestart = min(prestart, self.max_workers)
        self.backend = backend
        # Not an anyio CapacityLimiter: see _tokens.py.
        self._tokens: Tokens | None = Tokens(self.max_workers)
        self._slots: set[_Slot] = set()
        self._retiring: set[_Slot] = set()  # dropped, still being closed
        # Killed during a call and not reaped yet: counted busy (see PoolStatistics).
        self._killed: set[_Slot] = set()
        self._idle: list[_Slot] = []  # handed out from the end: most recently used last
        self._idle_changed = anyio.Event()
        self._timer_waits_for_idle = True
        self._task_group: TaskGroup | None = None
        self._stack: AsyncExitStack | None = None
        self._timer_scope: CancelScope | None = None
        # Calls starting a worker now: each scope is cancelled if the pool closes.
        self._starting: set[CancelScope] = set()
        self._starts_done: anyio.Event | None = None
        self._closed = False
        self._closed_event = anyio.Event()
        self._clock: Callable[[], float] = current_time
        # The two halves of a call's checkpoint, the running loop's own (see _run).
        self._cancel_point: Callable[[], Awaitable[None]] = checkpoint_if_cancelled
        self._schedule_point: Callable[[], Awaitable[None]] = cancel_shielded_checkpoint
        self._started = 0
        self._calls = 0
        self._failures = 0
        self._broken = 0
        # Seconds per item that the automatic chunks of each function's maps measured
        # last: the next map of that function starts from it (see _MapCore).
        self._per_item: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
        # How many lanes each function's last complete map measured that it needed: the
        # next map of that function starts with them (see _MapCore).
        self._lanes: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
        # After a map whose fewer lanes ran by turns with the event loop: how many maps
        # still run every lane from their start, and how many the last such wait was.
        self._every_lane_for = 0
        self._every_lane_wait = 0

    def _unbounded(self) -> None:
        """Let the caller's limiter alone decide (the default pool of ``to_process``)."""
        self._tokens = None
        self.max_workers = sys.maxsize

    # -- lifetime ------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        if self._stack is not None or self._closed:
            raise RuntimeError("a WorkerPool can be entered only once")
        # The event loop's clock, as anyio.current_time reads it, without the lookup.
        self._clock = loop_clock()
        self._cancel_point, self._schedule_point = checkpoint_halves()
        self._timer_scope = CancelScope()
        failures: list[Exception] = []
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(self.backend)
            stack.push_async_callback(self._close_workers)
            stack.callback(self._forget_task_group)
            self._task_group = await stack.enter_async_context(anyio.create_task_group())
            self._task_group.start_soon(interrupts_go_to_main_task(self._expire_idle))
            if self.prestart:
                async with anyio.create_task_group() as starters:
                    for _ in range(self.prestart):
                        starters.start_soon(self._prestart_one, failures)
            if failures:
                # Unwind everything (not by raising inside the task group, which would
                # wrap the reason in an exception group).
                self._task_group.cancel_scope.cancel()
            else:
                self._stack = stack.pop_all()
        if failures:
            # The first start that failed says why, as it would for a call.
            raise failures[0]
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        stack, self._stack = self._stack, None
        if stack is None:
            await self._close_workers()
            return
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        if self._task_group is not None:
            self._task_group.cancel_scope.cancel()
        # Closes the workers too. Each step that must finish shields itself; the task
        # groups in the stack are left here, in the scope they were entered in.
        await stack.aclose()

    async def aclose(self) -> None:
        """Close the pool now: every worker exits and is reaped before this returns.

        Calls that are running have their workers killed and raise
        :exc:`~procio_workers.BrokenWorkerProcess`; calls still starting their worker
        raise :exc:`anyio.ClosedResourceError`, as does every later call.

        Any task may call it, from within any cancel scope. The pool's background
        tasks end when the ``async with`` block that opened the pool is left.
        """
        await self._close_workers()

    async def _wait_closed(self) -> None:
        """Wait until the pool has been closed (by any task) and its workers reaped."""
        await self._closed_event.wait()

    def _forget_task_group(self) -> None:
        self._task_group = None

    async def _close_workers(self) -> None:
        self._closed = True
        if self._timer_scope is not None:
            self._timer_scope.cancel()
        for scope in self._starting:
            scope.cancel()
        busy = self._slots.difference(self._idle)
        slots = self._slots | self._retiring
        killed = list(self._killed)
        self._slots.clear()
        self._idle.clear()
        self._retiring.clear()
        self._killed.clear()
        for slot in busy:
            # Only a call that outlived the pool's block, or one running while another
            # task closes the pool, can still be running here.
            slot.closed_by_pool = True
            slot.worker.kill()
        # On Trio a Ctrl-C reaches this task even in a shielded wait. The closings go on
        # (they are protected from it), and it is raised once they all have ended,
        # as it came: not wrapped in the task group's exception group.
        interrupt: KeyboardInterrupt | None = None
        with CancelScope(shield=True):
            try:
                async with anyio.create_task_group() as tg:
                    for slot in slots:
                        tg.start_soon(interrupts_go_to_main_task(slot.worker.aclose))
            except BaseException as exc:
                interrupt = lone_interrupt(exc)
                if interrupt is None:
                    raise
            for slot in killed:
                if slot.reaped is not None:
                    slot.reaped.set()
            # A call starting a worker was cancelled above: it closes that worker itself.
            while self._starting:
                # One event for every task closing the pool at the same time.
                if self._starts_done is None or self._starts_done.is_set():
                    self._starts_done = anyio.Event()
                interrupt = await wait_through_interrupts(self._starts_done) or interrupt
        self._closed_event.set()
        if interrupt is not None:
            raise interrupt

    async def _finish(self, slot: _Slot) -> None:
        with CancelScope(shield=True):
            await slot.worker.aclose()
        # Not in a finally: on asyncio the loop's shutdown cancels every task, shielded
        # or not, and a worker whose closing was cut short must be closed again by
        # _close_workers.
        self._retiring.discard(slot)
        self._killed.discard(slot)
        if slot.reaped is not None:
            slot.reaped.set()

    async def _reaped(self, slot: _Slot) -> None:
        """Wait until *slot*'s worker, killed during a call, has exited and been reaped.

        A SIGKILL takes effect when the system gets to it: until then the process may
        still run the call's code. A call (or a map, or a stream) that killed its worker
        returns only after this, as AnyIO's ``to_process.run_sync`` waits for its
        killed worker, so that nothing of it runs any more once it has returned.
        """
        event = slot.reaped
        if event is not None and slot in self._killed:
            with CancelScope(shield=True):
                await event.wait()

    async def _prestart_one(self, failures: list[Exception]) -> None:
        try:
            slot = await self._start(reusable=True, options={}, ahead=True)
        except Exception as exc:
            failures.append(exc)
            return
        self._park(slot)

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError("the worker pool is closed")
        if self._task_group is None:
            raise RuntimeError("use the WorkerPool as an async context manager first")

    # -- figures -------------------------------------------------------------------

    def statistics(self) -> PoolStatistics:
        """Return the pool's figures now."""
        idle = len(self._idle)
        workers = len(self._slots) + len(self._killed)
        return PoolStatistics(
            workers=workers,
            busy=workers - idle,
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
        if fewer than *max_workers* run. A worker found dead before the call reached it
        is replaced, and the call runs on another (up to ``max_workers + 1`` attempts,
        and at most 16).

        Like every ``await`` in AnyIO and Trio, this is a checkpoint: a cancelled
        caller stops before anything is sent, and other tasks get to run even when the
        worker answers at once.

        Args:
            func: the function to call; with the default serializer it must be
                importable in the worker.
            args: its positional arguments.
            cancellable: if the caller is cancelled while the call runs, kill the
                worker and raise the cancellation once it has exited and been
                reaped (nothing of the call runs after that); by default the call is
                shielded and runs to completion.

        Raises:
            anyio.ClosedResourceError: if the pool is closed, or closed while the call
                was starting its worker.
            BrokenWorkerProcess: if the worker died or broke the protocol, or was killed
                because the pool closed during the call.
            SerializationError: if the arguments or the result could not travel.
            WorkerError: if the function raised ``SystemExit`` or another exception
                that cannot be re-raised here.
        """
        return await self._run(func, args, cancellable=cancellable, options={}, limiter=None)  # type: ignore[return-value]

    def map(
        self,
        func: Callable[[Any], T_Retval],
        iterable: Iterable[Any] | AsyncIterable[Any],
        *,
        chunksize: int | None = None,
        ordered: bool = True,
        cancellable: bool = False,
    ) -> MapResults[T_Retval]:
        """Call ``func(item)`` in workers for every item of *iterable*; iterate the results.

        Items travel in chunks, one round trip per chunk, on up to *max_workers* workers
        at once; the input is read only as fast as chunks start, so an endless source
        works. Use the results with ``async for``, or as an async context manager whose
        exit stops what is left of the work::

            async with pool.map(score, documents) as results:
                async for value in results:
                    print(f"{results.completed}/{results.total}", value)

        Args:
            func: the function to call, once per item (one argument: the item).
            iterable: the items: a sync or an async iterable.
            chunksize: items per chunk; ``None`` (the default) chooses from measured
                chunk times, aiming at about 10 ms of work per chunk, starting at 1 (or,
                over an input with a length, at what the last map of *func* in this
                pool measured).
            ordered: yield results in input order (the default), or as chunks complete.
            cancellable: when the iteration stops early, kill the workers running
                chunks instead of letting those chunks finish.

        The first exception raised by *func* ends the iteration: it is raised as it is
        (with the worker's traceback as ``__cause__`` and a note naming the item), and
        the work left is cancelled. In input order, every result before the failing
        item is yielded first.

        Raises:
            TypeError: if *iterable* is not iterable or *chunksize* not an int.
            ValueError: if *chunksize* is below 1.
        """
        if chunksize is not None:
            _check_int("chunksize", chunksize, minimum=1)
        if not isinstance(iterable, (Iterable, AsyncIterable)):
            raise TypeError(f"map() needs an iterable, not {type(iterable).__name__}")
        return MapResults(
            _MapCore(
                self, func, iterable, chunksize=chunksize, ordered=ordered, cancellable=cancellable
            )
        )

    def stream(
        self,
        func: Callable[[Unpack[PosArgsT]], Iterable[T_Retval]],
        *args: Unpack[PosArgsT],
        cancellable: bool = False,
    ) -> StreamResults[T_Retval]:
        """Run the generator function ``func(*args)`` in a worker; iterate what it yields.

        Items arrive as the generator produces them, and it is not advanced further than
        a bounded number of items ahead of the reader. Leaving the iteration early (or
        the ``async with`` block) closes the generator in the worker, which runs its
        ``finally`` blocks; with *cancellable*, a cancelled iteration kills the worker.

        Raises:
            procio_workers.SerializationError: at once, if the call cannot be sent.
            TypeError: from the iteration, if the backend or the worker cannot stream,
                or *func* did not return an iterator.
        """
        request = self.backend.prepare_stream(func, args)
        return StreamResults(_StreamCore(self, cancellable=cancellable, request=request))

    async def _run_batch(
        self,
        func: Callable[..., object],
        calls: list[tuple[Any, ...]],
        *,
        cancellable: bool,
        timing: list[float] | None = None,
        split: bool = False,
    ) -> list[object]:
        """Run one chunk of a map: a batch of calls of *func* on one worker.

        *timing*, if given, receives the seconds the batch took once it had its worker
        (not counting the wait for one). With *split*, a chunk too large for one frame
        runs in smaller pieces (an automatic chunk size is not the caller's choice).
        """
        self._check_open()
        try:
            request = self.backend.prepare_batch(func, calls)
        except SerializationError:
            # Which item cannot travel? The ones before it run, so that an ordered map
            # yields their results before the error, as for an error in the worker.
            for index, args in enumerate(calls):
                try:
                    self.backend.prepare_call(func, args)
                except Exception as error:
                    done = await self._run_batch(func, calls[:index], cancellable=cancellable)
                    raise BatchError(index, done, error) from None
            if not split or len(calls) < 2:
                raise
            # Each item travels, but not all of them in one frame: the chunk goes in
            # two halves, one after the other (each split again if need be).
            half = len(calls) // 2
            first = await self._run_batch(
                func, calls[:half], cancellable=cancellable, timing=timing, split=True
            )
            try:
                second = await self._run_batch(
                    func, calls[half:], cancellable=cancellable, timing=timing, split=True
                )
            except BatchError as exc:
                raise BatchError(half + exc.index, first + exc.results, exc.error) from None
            return first + second
        if not calls:
            return []
        try:
            if timing is None:
                results = await self._dispatch(request, cancellable, {}, None, self._call_batch)
            else:

                async def timed(slot: _Slot, request: Any, cancellable: bool) -> list[object]:
                    began = time.perf_counter()
                    try:
                        return await self._call_batch(slot, request, cancellable)
                    finally:
                        timing.append(time.perf_counter() - began)

                results = await self._dispatch(request, cancellable, {}, None, timed)
        except BaseException:
            self._failures += 1
            raise
        finally:
            self._calls += len(calls)
        return results

    async def _run_stream(
        self,
        request: Any,
        cancellable: bool,
        forward: Callable[[list[Any]], Awaitable[None]],
    ) -> None:
        """Run a stream on one worker, handing each group of items to *forward*."""
        self._check_open()

        async def run(slot: _Slot, request: Any, cancellable: bool) -> None:
            worker = slot.worker
            closed = False  # the stream was closed in the worker, or had ended there
            try:
                try:
                    groups = worker.stream(request, cancellable=cancellable)
                except NotImplementedError as exc:
                    raise TypeError(
                        f"this worker backend cannot stream generators ({exc})"
                    ) from exc
                try:
                    async for group in groups:
                        await forward(group)
                except NotImplementedError as exc:
                    raise TypeError(f"this worker cannot stream generators ({exc})") from exc
                except get_cancelled_exc_class():
                    if cancellable:
                        worker.kill()
                    raise
                finally:
                    aclose = getattr(groups, "aclose", None)
                    if aclose is not None:
                        # Stops the generator in the worker, and waits for it.
                        with CancelScope(shield=True):
                            await aclose()
                    closed = True
            except BaseException as exc:
                if isinstance(exc, get_cancelled_exc_class()) and closed and worker.alive:
                    # Cancelled, and the generator was closed in the worker: the
                    # protocol says it is idle. Anything else that is not an answer
                    # (a KeyboardInterrupt, which Trio raises wherever the code is,
                    # even before the closing began) leaves the worker out.
                    self._release(slot)
                    raise
                error = self._failed(slot, exc)
                await self._reaped(slot)
                if error is exc:
                    raise
                raise error from exc
            self._release(slot)

        try:
            await self._dispatch(request, cancellable, {}, None, run)
        except BaseException:
            self._failures += 1
            raise
        finally:
            self._calls += 1

    async def _run(
        self,
        func: Callable[..., object],
        args: tuple[Any, ...],
        *,
        cancellable: bool,
        options: Mapping[str, Any],
        limiter: CapacityLimiter | None,
    ) -> object:
        # A checkpoint, as every await in AnyIO and Trio is, in two halves: a cancelled
        # caller stops here, before anything is sent; the schedule point (where other
        # tasks run, even if the worker answers at once) comes once the call is sent
        # (in _call), so that it overlaps the worker's work.
        await self._cancel_point()
        self._check_open()
        try:
            # Serialized here, not in a coroutine of its own: one frame less per call.
            request = self.backend.prepare_call(func, args)
            result = await self._dispatch(request, cancellable, options, limiter, self._call)
        except get_cancelled_exc_class():
            raise
        except Exception:
            self._calls += 1
            self._failures += 1
            # A call that fails is a schedule point too, even one that failed before
            # it reached _call's (arguments that cannot be serialized, say): a loop of
            # failing calls must not hold the event loop.
            await self._schedule_point()
            raise
        except BaseException:
            self._calls += 1
            self._failures += 1
            raise
        self._calls += 1
        return result

    async def _dispatch(
        self,
        request: Any,
        cancellable: bool,
        options: Mapping[str, Any],
        limiter: CapacityLimiter | None,
        run: Callable[[_Slot, Any, bool], Awaitable[T_Retval]],
    ) -> T_Retval:
        """Run *request* with *run* on a worker, within the limits, retrying as needed."""
        # What this call holds, given back in the finally clause.
        held_limiter: CapacityLimiter | None = None
        held_tokens: Tokens | None = None
        try:
            if limiter is not None:
                # The caller's limiter (to_process's default one, or a limiter
                # given to run_sync). A free token is taken without a trip through
                # the event loop. Looked at first: on Trio, anyio 4.10 lets trio's
                # own WouldBlock out of acquire_nowait(), which no except clause here
                # could name. (Before anyio 4.14.2, on asyncio, a token owed to a
                # woken waiter could be taken here too: see _tokens.py. The pool's
                # own tokens, below, bound its workers all the same.)
                try:
                    if limiter.available_tokens < 1:
                        raise anyio.WouldBlock
                    limiter.acquire_nowait()
                except anyio.WouldBlock:
                    await limiter.acquire()
                held_limiter = limiter
            tokens = self._tokens
            if tokens is not None:
                if not tokens.take_nowait():
                    await tokens.take()
                held_tokens = tokens
            # Each attempt that fails before the call reached its worker (it had died
            # while idle) discards that worker, so a few attempts always suffice.
            attempts = min(self.max_workers + 1, _MAX_ATTEMPTS)
            for attempt in range(1, attempts + 1):
                slot = await self._acquire(options)
                try:
                    return await run(slot, request, cancellable)
                except BrokenWorkerProcess as exc:
                    if exc.started or attempt == attempts:
                        raise
            raise AssertionError("unreachable")  # pragma: no cover - the loop returns
        finally:
            if held_tokens is not None:
                held_tokens.release()
            if held_limiter is not None:
                held_limiter.release()

    async def _acquire(self, options: Mapping[str, Any]) -> _Slot:
        if not options:
            while self._idle:
                slot = self._idle.pop()
                if slot.worker.alive:
                    return slot
                self._drop(slot, "found dead while idle", logging.INFO)
        slot = await self._start(reusable=not options, options=options)
        try:
            # A start can end after its caller was cancelled with no checkpoint since
            # (on Trio a task sees a cancellation only at one; elsewhere, the last step
            # of the start may have been done already): nothing must be sent for that
            # caller. The new worker has run nothing and joins the pool idle.
            await self._cancel_point()
        except BaseException:
            if slot.reusable:
                self._park(slot)
            else:
                self._drop(slot, "retired: its call was cancelled before it was sent")
            raise
        return slot

    async def _start(
        self, *, reusable: bool, options: Mapping[str, Any], ahead: bool = False
    ) -> _Slot:
        self._check_open()
        # Closing the pool cancels this scope: a start must not hold up the close, nor
        # hand a worker to a closed pool.
        scope = CancelScope()
        self._starting.add(scope)
        worker: Worker | None = None
        try:
            with scope:
                if ahead:
                    worker = await self.backend.prestart_worker()
                else:
                    worker = await self.backend.start_worker(options)
                self._started += 1
                logger.debug("worker %s started", worker.pid)
                if self.initializer is not None:
                    request = self.backend.prepare_call(self.initializer, self.initargs)
                    await worker.call(request)
            if self._closed:
                raise ClosedResourceError(_CLOSED_DURING_START)
        except BaseException as exc:
            if worker is not None:
                # Whatever went wrong (the initializer failed, a KeyboardInterrupt, the
                # pool closed), this worker never joins the pool.
                worker.kill()
                with CancelScope(shield=True):
                    await worker.aclose()
            if self._closed and isinstance(exc, Exception):
                if isinstance(exc, ClosedResourceError):
                    raise
                raise ClosedResourceError(_CLOSED_DURING_START) from exc
            if worker is None or isinstance(
                exc, (get_cancelled_exc_class(), BrokenWorkerProcess, ClosedResourceError)
            ):
                raise
            if not isinstance(exc, Exception):
                raise
            raise BrokenWorkerProcess(f"the initializer failed: {exc!r}", pid=worker.pid) from exc
        finally:
            self._starting.discard(scope)
            if not self._starting and self._starts_done is not None:
                self._starts_done.set()
        if worker is None:  # pragma: no cover - only the pool's closing cancels the start
            raise ClosedResourceError(_CLOSED_DURING_START)
        slot = _Slot(worker, reusable=reusable)
        self._slots.add(slot)
        return slot

    async def _call(self, slot: _Slot, request: Any, cancellable: bool) -> object:
        worker = slot.worker
        try:
            # The Worker contract's fast path: a worker that takes the call over at once
            # often has its answer before the caller would wait, and the call then needs
            # no cancel scope (nothing can cancel it), which is worth having.
            sent = worker.send_nowait(request)
            if sent and not worker.reply_may_be_quick:
                # A worker that was asleep: its reply cannot be there after one pass of
                # the event loop, and the wait for it (in finish_call) is the schedule
                # point instead, one pass of the loop fewer.
                result = PENDING
            else:
                # The schedule point of the checkpoint: other tasks run while the worker
                # computes. Shielded: a call that was sent is under way, and a
                # cancellation that comes now is for the call (cancellable=True) or for
                # the caller's next checkpoint, as for any call already running.
                await self._schedule_point()
                result = worker.reply_nowait() if sent else PENDING
            if result is PENDING:
                with CancelScope(shield=not cancellable):
                    if sent:
                        result = await worker.finish_call()
                    else:
                        result = await worker.call(request)
        except BaseException as exc:
            error = self._failed(slot, exc)
            await self._reaped(slot)
            if error is exc:
                raise
            raise error from exc
        self._release(slot)
        return result

    async def _call_batch(self, slot: _Slot, request: Any, cancellable: bool) -> list[object]:
        try:
            with CancelScope(shield=not cancellable):
                results = await slot.worker.call_batch(request)
        except BaseException as exc:
            error = self._failed(slot, exc)
            await self._reaped(slot)
            if error is exc:
                raise
            raise error from exc
        self._release(slot)
        return results

    def _per_item_estimate(self, func: Callable[..., object]) -> float | None:
        """Seconds per item that the last map of *func* measured, if any."""
        return _recall(self._per_item, func)

    def _keep_per_item_estimate(self, func: Callable[..., object], seconds: float) -> None:
        _remember(self._per_item, func, seconds)

    def _lanes_estimate(self, func: Callable[..., object]) -> int | None:
        """How many lanes the last complete map of *func* measured that it needed.

        ``None`` (every lane) for a while after a map of this pool ran fewer lanes by
        turns with the event loop: see :meth:`_lanes_ran_by_turns`.
        """
        if self._every_lane_for:
            self._every_lane_for -= 1
            return None
        return _recall(self._lanes, func)

    def _lanes_ran_by_turns(self) -> None:
        """A map that ran fewer lanes than it may ran them by turns with the event loop.

        Such packing may last, and a map that began on a packed worker gains less from
        the lanes it adds than one that runs every lane from its start; or it may pass,
        as the scheduler moves one of the two to an idle CPU. So the next maps run every
        lane, then fewer are tried again: 2 maps the first time, twice as many each time
        the try runs by turns too (up to :data:`MOST_MAPS_OF_EVERY_LANE`).
        """
        wait = min(max(2, 2 * self._every_lane_wait), MOST_MAPS_OF_EVERY_LANE)
        self._every_lane_wait = self._every_lane_for = wait

    def _lanes_side_by_side(self) -> None:
        """A map that ran fewer lanes than it may ran them side by side with the loop."""
        self._every_lane_wait = 0

    def _keep_lanes_estimate(self, func: Callable[..., object], lanes: int) -> None:
        _remember(self._lanes, func, lanes)

    def _chunk_runner(
        self, func: Callable[..., object], *, cancellable: bool, split: bool, measure: bool
    ) -> _ChunkRunner:
        """The runner of one lane of a map (see :class:`_ChunkRunner`)."""
        return _ChunkRunner(self, func, cancellable=cancellable, split=split, measure=measure)

    def _failed(self, slot: _Slot, exc: BaseException) -> BaseException:
        """Decide the fate of *slot*'s worker after its call raised *exc*; return what to raise."""
        worker = slot.worker
        if isinstance(exc, BrokenWorkerProcess):
            # "broken" counts workers lost while they ran a call: one found dead before
            # the call reached it is not, whether the pool saw its exit first or the
            # call did.
            if exc.started:
                self._broken += 1
            if slot.closed_by_pool:
                self._drop(slot, "killed: the pool closed during its call")
            elif exc.started:
                self._drop(slot, f"lost during a call: {exc}", logging.INFO)
            else:
                self._drop(slot, f"found unusable before the call reached it: {exc}")
            if slot.closed_by_pool:
                return BrokenWorkerProcess(
                    "the worker pool was closed during the call, which killed its worker",
                    pid=exc.pid,
                    returncode=exc.returncode,
                    stderr_tail=exc.stderr_tail,
                )
            return exc
        if isinstance(exc, Exception):
            # The worker answered: the function's own error, or a result that could not
            # be rebuilt here. It is idle again, unless it broke while answering.
            if worker.alive:
                self._release(slot)
            else:
                self._broken += 1
                self._drop(slot, "broke while answering", logging.INFO)
            return exc
        # A cancellation, or a KeyboardInterrupt (or any other exception that is not an
        # answer) that landed while the call ran: the worker may still be running it,
        # and would hand its result to the next call. It goes.
        worker.kill()
        # Reaped in the background (_finish), or by the pool's closing, which counts none.
        if not slot.closed_by_pool and self._task_group is not None:
            slot.reaped = anyio.Event()
            self._killed.add(slot)
        self._drop(slot, "killed: its call was cancelled or interrupted")
        return exc

    def _release(self, slot: _Slot, *, last_choice: bool = False) -> None:
        slot.tasks += 1
        limit = self.max_tasks_per_worker
        if self._closed:
            self._drop(slot, "retired: the pool is closing")
        elif not slot.reusable:
            self._drop(slot, "retired: it was started for one call with process options")
        elif limit is not None and slot.tasks >= limit:
            self._drop(slot, f"retired after {slot.tasks} calls (max_tasks_per_worker)")
        else:
            self._park(slot, last_choice=last_choice)

    def _park(self, slot: _Slot, *, last_choice: bool = False) -> None:
        """Make *slot* idle: handed out next, or, as the *last_choice*, after the others."""
        if self._closed:
            self._drop(slot, "retired: the pool is closing")
            return
        slot.idle_since = self._clock()
        if last_choice:
            self._idle.insert(0, slot)
        else:
            self._idle.append(slot)
        # Only a timer with nothing to watch needs waking: otherwise it already sleeps
        # until an expiry no later than this worker's.
        if self._timer_waits_for_idle:
            self._idle_changed.set()

    def _drop(self, slot: _Slot, reason: str, level: int = logging.DEBUG) -> None:
        """Forget a worker and close it in the background (it is reaped either way)."""
        logger.log(level, "worker %s %s", slot.worker.pid, reason)
        self._slots.discard(slot)
        if slot in self._idle:
            self._idle.remove(slot)
        if slot.closed_by_pool:
            return  # the pool's closing kills and reaps it
        self._retiring.add(slot)
        if self._task_group is not None:
            self._task_group.start_soon(interrupts_go_to_main_task(self._finish), slot)
        else:
            # Closing: _close_workers reaps everything in _retiring.
            slot.worker.kill()

    async def _expire_idle(self) -> None:
        assert self._timer_scope is not None
        with self._timer_scope:
            await self._expire_idle_loop()

    async def _expire_idle_loop(self) -> None:
        while True:
            timeout = self.idle_timeout
            deadline = math.inf
            if timeout is not None:
                now = current_time()
                for slot in [s for s in self._idle if now - s.idle_since >= timeout]:
                    self._drop(slot, f"retired after {timeout:g} s idle")
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


class _ChunkRunner:
    """The chunks of one lane of a map, one BATCH each, answered in the order sent.

    On a worker that takes a BATCH queued behind the running one (its HELLO lists the
    feature ``"pipeline"``), the lane keeps that worker from chunk to chunk and sends the
    next chunk before the answer to the running one: the worker goes on to it at once,
    instead of idling while the parent reads the answer and prepares what follows. A
    queued chunk that the lane no longer wants (the map stopped) is dropped with a
    CLOSE if the worker has not begun it, and is otherwise awaited, or killed with
    ``cancellable=True``, like a running one. Elsewhere every chunk goes through
    :meth:`WorkerPool._run_batch` on its own, as a call does.

    The worker is handed back between chunks when calls wait for one, when it reaches
    ``max_tasks_per_worker``, and before the lane waits for its input.

    A chunk is a list of items, each the one argument of a call. A worker that takes a
    BATCH of items (``takes_items``, the feature ``"items"``) gets them as they are;
    others get a BATCH of argument tuples.
    """

    def __init__(
        self,
        pool: WorkerPool,
        func: Callable[..., object],
        *,
        cancellable: bool,
        split: bool,
        measure: bool = False,
    ) -> None:
        self._pool = pool
        self._func = func
        self._cancellable = cancellable
        self._split = split
        self._slot: _Slot | None = None
        self._token = False  # one of the pool's tokens is held
        self._plain = False  # the workers of this pool cannot pipeline
        self._ran = 0  # chunks answered on the held worker
        self._sent: deque[tuple[Any, int]] = deque()  # (tag, item count), oldest first
        self._unsent: tuple[Any, list[Any]] | None = None  # (tag, items) for _run_batch
        # The backend's BATCH of items, if it has one (the process backend does).
        self._prepare_items: Callable[[Callable[..., object], list[Any]], Any] | None = getattr(
            pool.backend, "_prepare_items", None
        )
        self._dropping = False  # a CLOSE went out for the chunk sent last
        self._began = 0.0  # when the chunk answered next began to run
        self._killed: list[_Slot] = []  # workers killed under this lane, to be reaped
        #: The tag of the chunk whose answer :meth:`result` awaits (or last awaited).
        self.current: Any = None
        #: CPU seconds that the workers held by this lane spent while it held them;
        #: ``None`` if not asked for (*measure*), or once that could not be told for one
        #: of them.
        self.worker_seconds: float | None = 0.0 if measure else None
        # The held worker's (CPU time, time waited for a CPU) when taken, and when last
        # asked for waited_share, with the same of this thread (the event loop's) and
        # the time then.
        self._cpu_at: tuple[float, float] | None = None
        self._share_at: tuple[float, float] | None = None
        self._loop_at: tuple[float, float] | None = None
        self._share_since = 0.0
        # The files those are read from, held open with the worker (-1: not open).
        self._worker_stat = self._loop_stat = -1
        self._stepped_back = False  # see step_back

    def answer_arrived(self) -> bool:
        """Whether the answer awaited next has begun to arrive (``False`` if unknown)."""
        slot = self._slot
        if slot is None or not self._sent:
            return False
        arrived = getattr(slot.worker, "answer_arrived", None)
        return bool(arrived()) if arrived is not None else False

    def _took(self, slot: _Slot) -> None:
        """*slot* is now held by this lane: note its worker's CPU time."""
        if self.worker_seconds is not None:
            # Held open while the lane holds the worker: _gave_up and _lose, one of
            # which ends every hold, close them.
            self._worker_stat = _open_schedstat(slot.worker.pid)
            self._loop_stat = _open_schedstat(THIS_THREAD)
            self._cpu_at = self._share_at = _cpu_seconds(slot.worker.pid, self._worker_stat)
            self._loop_at = _cpu_seconds(THIS_THREAD, self._loop_stat)
            self._share_since = time.perf_counter()
            if self._cpu_at is None:
                self.worker_seconds = None

    def _gave_up(self, slot: _Slot) -> None:
        """*slot* leaves this lane: count what its worker's CPU time grew by."""
        at, self._cpu_at = self._cpu_at, None
        self._share_at = self._loop_at = None
        if at is not None and self.worker_seconds is not None:
            now = _cpu_seconds(slot.worker.pid, self._worker_stat)
            if now is None:
                self.worker_seconds = None
            else:
                self.worker_seconds += max(0.0, now[0] - at[0])
        self._close_stats()

    def _close_stats(self) -> None:
        """Close the files of the held worker's and this thread's CPU times, if open."""
        worker, loop = self._worker_stat, self._loop_stat
        self._worker_stat = self._loop_stat = -1
        for fd in (worker, loop):
            if fd >= 0:
                os.close(fd)

    def step_back(self) -> None:
        """Take no more chunks: the worker, once handed back, goes to the back of the line.

        The lanes started instead then take the pool's other workers first.
        """
        self._stepped_back = True

    def waited_share(self) -> float | None:
        """The share of the time that the held worker and the loop spent waiting for a CPU.

        The time since the last call, or since this lane took its worker; the two waits
        are added; ``None`` if unknown. Side by side, on CPUs of their own, neither
        waits: the share is about 0. Run by turns on one CPU, each waits while the other
        runs, and the share nears 1.
        """
        slot, worker_at, loop_at = self._slot, self._share_at, self._loop_at
        if slot is None or worker_at is None or loop_at is None:
            return None
        since, self._share_since = self._share_since, time.perf_counter()
        worker_now = self._share_at = _cpu_seconds(slot.worker.pid, self._worker_stat)
        loop_now = self._loop_at = _cpu_seconds(THIS_THREAD, self._loop_stat)
        passed = self._share_since - since
        if worker_now is None or loop_now is None or passed <= 0:
            return None
        return (worker_now[1] - worker_at[1] + loop_now[1] - loop_at[1]) / passed

    @property
    def busy(self) -> bool:
        """Whether an answer is awaited."""
        return bool(self._sent) or self._unsent is not None

    def can_queue(self) -> bool:
        """Whether a chunk may be queued now behind the one running."""
        slot = self._slot
        # (Not worker.alive: that says "idle", and the worker runs the sent chunk. A
        # worker lost meanwhile fails the answer awaited first, queued chunk or not.)
        if slot is None or len(self._sent) != 1:
            return False
        return not self._hand_back_due(queued=1)

    def _hand_back_due(self, queued: int) -> bool:
        slot = self._slot
        assert slot is not None
        limit = self._pool.max_tasks_per_worker
        if limit is not None and slot.tasks + self._ran + queued + 1 > limit:
            return True
        tokens = self._pool._tokens
        return tokens is not None and tokens.waiting > 0

    def _prepare(self, worker: Worker, items: list[Any]) -> Any:
        """The request of the chunk *items* for *worker*."""
        if self._prepare_items is not None and getattr(worker, "takes_items", False):
            request = self._prepare_items(self._func, items)
            if request is not None:
                return request
        return self._pool.backend.prepare_batch(self._func, [(item,) for item in items])

    async def ready(self) -> None:
        """Take a worker for the next chunk, if the lane holds none.

        The lane looks again at whether the map still wants that chunk once this
        returns: a worker's start is long, and the map may have stopped meanwhile.
        """
        if self._slot is None and not self._plain:
            await self._open()

    async def submit(self, tag: Any, items: list[Any]) -> None:
        """Send a chunk of items while nothing is awaited."""
        assert not self.busy
        pool = self._pool
        pool._check_open()
        for _ in range(_MAX_ATTEMPTS):
            if self._slot is None and not self._plain:
                await self._open()
            slot = self._slot
            if slot is None:
                self._unsent = (tag, items)
                return
            worker = slot.worker
            try:
                request = self._prepare(worker, items)
            except SerializationError:
                # _run_batch finds the item that cannot travel, or splits the chunk.
                self.hand_back()
                self._unsent = (tag, items)
                return
            try:
                with CancelScope(shield=not self._cancellable):
                    await worker.send_batch(request)
            except BaseException as exc:
                self._lose(exc)
                if isinstance(exc, BrokenWorkerProcess) and not exc.started:
                    continue  # it had died while idle: another worker takes the chunk
                raise
            self._sent.append((tag, len(items)))
            self._began = time.perf_counter()
            return
        raise BrokenWorkerProcess(  # pragma: no cover - _MAX_ATTEMPTS workers found dead
            "every worker tried had exited while idle"
        )

    def queue(self, tag: Any, items: list[Any]) -> bool:
        """Send a chunk behind the running one; ``False`` if it must wait for :meth:`submit`."""
        assert self.can_queue()
        assert self._slot is not None
        worker = self._slot.worker
        try:
            request = self._prepare(worker, items)
        except SerializationError:
            return False
        try:
            worker.queue_batch(request)
            self._sent.append((tag, len(items)))
        except BaseException as exc:
            # A KeyboardInterrupt (on Trio it lands wherever the code is; one sent by
            # the very item queued here lands just after its frame went out): whether
            # the worker or this lane counted the chunk is unknown, so its answer
            # could reach whoever uses the worker next. The worker goes.
            self._lose(exc)
            raise
        return True

    async def result(self) -> tuple[Any, list[object], float]:
        """Wait for the oldest chunk's answer: (its tag, its results, seconds it took).

        Raises what :meth:`WorkerPool._run_batch` raises for a chunk; the worker stays
        with the lane if it answered.
        """
        pool = self._pool
        if self._unsent is not None:
            tag, items = self._unsent
            self._unsent = None
            self.current = tag
            self.worker_seconds = None  # run by whichever worker the pool hands out
            timing: list[float] = []
            results = await pool._run_batch(
                self._func,
                [(item,) for item in items],
                cancellable=self._cancellable,
                timing=timing,
                split=self._split,
            )
            return tag, results, sum(timing)
        slot = self._slot
        assert slot is not None
        assert self._sent
        worker = slot.worker
        tag, count = self._sent.popleft()
        self.current = tag
        answer: Exception | None = None
        results = []
        stopped: BaseException | None = None
        if self._sent and not self._cancellable and not self._dropping:
            # A chunk waits behind this one, which runs to completion however the lane
            # is cancelled: the queued one must then not begin. Told now, while this one
            # runs, the worker drops it instead of going on to it.
            # (Without waiting for room in the pipe, while the worker may be blocked
            # writing this answer: if the CLOSE cannot go now, it goes once the answer
            # has been read, and the queued chunk is dropped only if not begun by then.)
            try:
                await worker.wait_for_answer()
            except get_cancelled_exc_class() as exc:
                stopped = exc
                self._dropping = worker.try_drop_queued()
        try:
            with CancelScope(shield=not self._cancellable):
                try:
                    results = await worker.receive_batch()
                except BrokenWorkerProcess:
                    raise
                except Exception as exc:
                    # The function's error, or an item that cannot travel: the worker
                    # answered, and is idle again (or on to the chunk queued behind).
                    if not (worker.alive or self._sent):
                        raise
                    answer = exc
                if self._sent and stopped is not None and not self._dropping:
                    await worker.drop_queued()  # (with the rest of its frame, if any)
                    self._dropping = True
                elif self._sent:
                    # The next chunk's frame goes out whole now, if it did not at once.
                    await worker.finish_queued()
        except BaseException as exc:
            pool._calls += count
            self._lose(exc)
            raise
        now = time.perf_counter()
        took, self._began = now - self._began, now
        pool._calls += count
        self._ran += 1
        if stopped is not None:
            raise stopped  # this chunk's outcome is for nobody now
        if answer is not None:
            pool._failures += 1
            raise answer
        if not self._sent and self._hand_back_due(queued=0):
            self.hand_back()
        return tag, results, took

    async def aclose(self) -> None:
        """Drop a queued chunk (or wait for it, if begun), and hand the worker back.

        Its results are not reported. With ``cancellable=True`` a cancellation kills the
        worker instead of waiting. Returns once every worker killed under this lane has
        been reaped: nothing of the lane runs after that.
        """
        try:
            await self._close_held()
        finally:
            killed, self._killed = self._killed, []
            for slot in killed:
                await self._pool._reaped(slot)

    async def _close_held(self) -> None:
        slot = self._slot
        if slot is None or not self._sent:
            self.hand_back()
            return
        worker = slot.worker
        try:
            with CancelScope(shield=not self._cancellable):
                if not self._dropping:
                    self._dropping = worker.try_drop_queued()
                while self._sent:
                    _, count = self._sent.popleft()
                    self._pool._calls += count
                    try:
                        await worker.receive_batch()
                    except BrokenWorkerProcess:
                        raise
                    except Exception:
                        if not (worker.alive or self._sent):
                            raise
                    if self._sent and not self._dropping:
                        # Nothing is awaited before the last chunk now: its frame and
                        # the CLOSE may wait for room.
                        await worker.drop_queued()
                        self._dropping = True
        except Exception as exc:
            self._lose(exc)  # the map has ended: nobody waits for this error
            return
        except BaseException as exc:
            self._lose(exc)
            raise
        self.hand_back()

    def hand_back(self) -> None:
        """Return the worker (idle: nothing is awaited) and the token to the pool."""
        assert not self._sent
        self._dropping = False
        slot, self._slot = self._slot, None
        if slot is not None:
            self._gave_up(slot)
            if self._ran:
                # _release counts one task: the others are counted here.
                slot.tasks += self._ran - 1
                self._pool._release(slot, last_choice=self._stepped_back)
            else:
                self._pool._park(slot, last_choice=self._stepped_back)
        self._ran = 0
        self._release_token()

    def _release_token(self) -> None:
        if self._token:
            self._token = False
            tokens = self._pool._tokens
            if tokens is not None:
                tokens.release()

    def _lose(self, exc: BaseException) -> None:
        """The held worker raised *exc* while not answering: the pool decides its fate."""
        slot, self._slot = self._slot, None
        self._sent.clear()
        self._dropping = False
        if not (isinstance(exc, BrokenWorkerProcess) and not exc.started):
            self._pool._failures += 1  # (a worker found dead first is retried)
        if slot is not None:
            self.worker_seconds = self._cpu_at = self._share_at = None  # (it may be gone)
            self._close_stats()
            slot.tasks += self._ran
            self._ran = 0
            error = self._pool._failed(slot, exc)
            if slot.reaped is not None:
                self._killed.append(slot)
            if error is not exc:
                self._release_token()
                raise error from exc
        self._release_token()

    async def _open(self) -> None:
        """Take one of the pool's tokens and a worker."""
        pool = self._pool
        tokens = pool._tokens
        if tokens is not None and not self._token:
            if not tokens.take_nowait():
                await tokens.take()
            self._token = True
        try:
            slot = await pool._acquire({})
        except BaseException:
            self._release_token()
            raise
        worker = slot.worker
        if worker.pipelines:
            self._slot = slot
            self._took(slot)
            return
        pool._park(slot)
        self._release_token()
        self._plain = True
