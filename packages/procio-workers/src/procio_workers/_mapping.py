"""Many calls at once: ``WorkerPool.map`` in chunks, and ``WorkerPool.stream`` of a generator.

Both run their work in a *driver* task that lives in the pool's task group, not in the
caller's task: the caller may iterate with a plain ``async for`` and leave it with
``break``, and the work it leaves behind is cancelled as soon as the results object is
dropped (or, with ``async with``, before the block is left), whichever task holds it.
Results travel from the driver to the caller a chunk (or a frame of a stream) at a time,
so the cost per item stays small.
"""

from __future__ import annotations

import math
import os
import sys
import threading
from collections import deque
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterable,
    Iterator,
)
from contextlib import suppress
from itertools import islice
from time import perf_counter, thread_time
from types import TracebackType
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import anyio
from anyio import CancelScope, ClosedResourceError, EndOfStream, WouldBlock, get_cancelled_exc_class
from anyio.lowlevel import cancel_shielded_checkpoint
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import BatchError
from ._hosting import wait_through_interrupts

if TYPE_CHECKING:
    from typing import Protocol

    from anyio.abc import TaskGroup

    # What a map and a stream need of their pool, declared here so that this module does
    # not import the pool's (which imports this one): the pool's WorkerPool and its
    # lanes' runner fit these.

    class _Lane(Protocol):
        """One lane of a map: the chunks it runs on one worker, in order."""

        @property
        def current(self) -> Any: ...  # the tag of the chunk whose answer is awaited

        @property
        def busy(self) -> bool: ...

        def can_queue(self) -> bool: ...

        def answer_arrived(self) -> bool: ...

        @property
        def worker_seconds(self) -> float | None: ...

        def waited_share(self) -> float | None: ...

        def step_back(self) -> None: ...

        async def ready(self) -> None: ...

        async def submit(self, tag: Any, items: list[Any]) -> None: ...

        def queue(self, tag: Any, items: list[Any]) -> bool: ...

        async def result(self) -> tuple[Any, list[object], float]: ...

        async def aclose(self) -> None: ...

        def hand_back(self) -> None: ...

    class WorkerPool(Protocol):
        """The part of :class:`procio_workers.WorkerPool` that maps and streams use."""

        @property
        def max_workers(self) -> int: ...

        @property
        def _task_group(self) -> TaskGroup | None: ...

        def _check_open(self) -> None: ...

        def _chunk_runner(
            self, func: Callable[..., object], *, cancellable: bool, split: bool, measure: bool
        ) -> _Lane: ...

        def _per_item_estimate(self, func: Callable[..., object]) -> float | None: ...

        def _keep_per_item_estimate(self, func: Callable[..., object], seconds: float) -> None: ...

        def _lanes_estimate(self, func: Callable[..., object]) -> int | None: ...

        def _keep_lanes_estimate(self, func: Callable[..., object], lanes: int) -> None: ...

        def _lanes_ran_by_turns(self) -> None: ...

        def _lanes_side_by_side(self) -> None: ...

        async def _run_stream(
            self,
            request: Any,
            cancellable: bool,
            forward: Callable[[list[Any]], Awaitable[None]],
        ) -> None: ...


if sys.version_info >= (3, 11):
    from typing import Self
else:  # pragma: no cover - Python 3.10 only
    from exceptiongroup import BaseExceptionGroup
    from typing_extensions import Self

T = TypeVar("T")

#: With ``chunksize=None``, a chunk aims at about this much work in a worker: enough to
#: make the cost of one round trip (tens of microseconds) a small share of it, little
#: enough that the workers share the tail of the work evenly.
TARGET_CHUNK_SECONDS = 0.01
#: The largest automatic chunk, whatever the measurements say.
MAX_AUTO_CHUNK = 10_000
#: For an input of known length, no automatic chunk is larger than its length over this
#: many chunks per lane that runs (and one per lane that may start later): every worker
#: used then has one chunk running and one waiting behind it from the start, and the
#: last chunks end together (each is aimed at :data:`TARGET_CHUNK_SECONDS` of work at
#: most, so none leaves a long tail). Two, not
#: more: measured in interleaved rounds on a 2-CPU machine, a map of 20,000 tiny calls
#: on 2 workers ran 11-14% faster with 2 chunks per worker than with 4. Each chunk costs
#: the parent a send, an answer to read and a hand-over to the caller, and with more
#: chunks an ordered map waits more often for the chunk due next.
CHUNKS_PER_WORKER = 2
#: With ``chunksize=None``, a map's first chunks take these shares of the size chosen:
#: the caller, who has nothing to do until the first results come, gets them after a
#: third of the work, and the worker makes the next, larger chunk while the caller goes
#: through them. Measured in interleaved rounds on a 2-CPU machine, a map of 20,000 tiny
#: calls, run on one lane, took 4-5% less time with first chunks of a third and two
#: thirds of the size than with none smaller (2 workers; a quarter and then a half, or
#: the size doubling from a tenth, were no better).
RAMP_SHARES = (1 / 3, 2 / 3)
#: ... but only for chunks of at least this much work (by the measured time per item):
#: a smaller one gains less by the ramp than its two more chunks cost (a message each
#: way and a hand-over each, some tens of microseconds).
RAMP_MIN_SECONDS = 0.0003
#: The most chunks of one map that run at once.
MAX_LANES = 1024
#: A map that runs fewer lanes than it may starts the others once its caller waits this
#: many times longer for results than it spent on the last ones: the lanes then fall far
#: behind the caller. A shorter wait is no sign: with one lane that keeps up, the caller
#: still waits a little now and then, for a worker woken late or sharing its CPU.
LANE_WAIT_RATIO = 4
#: A map that runs fewer lanes than it may, in which a worker and the event loop's
#: thread, between them, waited for a CPU at least this share of the time since that
#: worker's last answer, runs the two by turns, not side by side: they share one CPU (a
#: scheduler that packs work onto few CPUs does that), and fewer lanes gain nothing. It
#: starts the others at once, and a lone lane steps back.
TURNS_SHARE = 0.5
#: How many items an async source may be read ahead of the chunks that take them.
SOURCE_READ_AHEAD = 1024
#: Whether ``async for`` over results steps their ``__anext__`` (from Python 3.12 on)
#: rather than an async generator (before it): whichever costs less per item there.
_ASYNC_FOR_STEPS_ANEXT = sys.version_info >= (3, 12)


def _leaves(exc: BaseException) -> list[BaseException]:
    """The exceptions in *exc*, with exception groups opened up."""
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for each in exc.exceptions for leaf in _leaves(each)]
    return [exc]


def _note(exc: BaseException, text: str) -> None:
    """Attach *text* to *exc* as a PEP 678 note (``__notes__`` before Python 3.11)."""
    add_note = getattr(exc, "add_note", None)
    if add_note is not None:
        add_note(text)
        return
    try:  # pragma: no cover - Python 3.10 only
        notes = list(getattr(exc, "__notes__", ()))
        notes.append(text)
        exc.__notes__ = notes  # type: ignore[attr-defined]
    except AttributeError:  # pragma: no cover - an exception without a __dict__
        pass


class _Chunk:
    """One chunk's outcome, sent by a lane to the results object."""

    __slots__ = ("error", "error_index", "number", "results")

    def __init__(
        self,
        number: int,
        results: list[Any],
        error: BaseException | None = None,
        error_index: int | None = None,
    ) -> None:
        self.number = number
        self.results = results
        self.error = error
        self.error_index = error_index


class _Core(Generic[T]):
    """The state of a map or a stream, shared by its driver task and its results object.

    The driver holds this, never the results object that the caller iterates: a plain
    ``async for`` left with ``break`` then drops the last reference to that object, and
    its finalizer stops the driver.
    """

    def __init__(self, pool: WorkerPool, buffer: int) -> None:
        self._pool = pool
        self._send: MemoryObjectSendStream[Any]
        self._receive: MemoryObjectReceiveStream[Any]
        self._send, self._receive = anyio.create_memory_object_stream[Any](buffer)
        # The results at hand: a list at a time, stepped by one iterator that the
        # results generator and __anext__ share (a ``for`` over a list's iterator is
        # the cheapest step Python has), and the lists that wait behind it.
        self._at_hand: Iterator[T] = iter(())
        self._lists: deque[list[T]] = deque()
        self._waiting = False  # a task waits for the driver (one at a time)
        self._scope = CancelScope()
        self._started = False
        self._closed = False  # the iteration has ended (no more items will come)
        self._aclosed = False  # closed by the caller: iterating further is an error
        self._done = anyio.Event()
        self._raise: BaseException | None = None
        # For the map's measurement of who sets its pace: the CPU time of this thread
        # (the event loop's, where the driver, its lanes and the caller all run) when the
        # driver started, and when the caller was last handed results.
        self._began_cpu = 0.0
        self._handed = 0.0
        self._thread = threading.get_ident()
        # Set by the driver: it ended of itself (not cancelled), or failed unexpectedly.
        self._complete = False
        self._failure: BaseException | None = None

    # -- the caller's side ---------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        pool = self._pool
        pool._check_open()
        task_group = pool._task_group
        assert task_group is not None  # _check_open says so
        self._started = True
        self._began_cpu = thread_time()
        task_group.start_soon(self._run_driver)

    async def _fill(self) -> None:
        """Wait until an item is ready, or raise what ends the iteration."""
        if self._aclosed:
            raise ClosedResourceError("these results were closed")
        if self._closed:
            raise StopAsyncIteration  # ended already, by its last item or an error
        self._start()
        if self._waiting:
            raise anyio.BusyResourceError("waiting for results of this iteration")
        self._waiting = True
        try:
            await self._wait_for_items()
        finally:
            self._waiting = False

    async def _wait_for_items(self) -> None:
        # Called once self._at_hand is exhausted: it moves on to the next list with
        # items, receiving more from the driver while there is none.
        lists = self._lists
        while True:
            while lists:
                items = lists.popleft()
                if items:
                    self._at_hand = iter(items)
                    self._handed = perf_counter()
                    return
            if self._raise is not None:
                error, self._raise = self._raise, None
                self._stop()
                self._closed = True
                self._receive.close()
                raise error
            # (Asked first: most waits have no limit, and skip the look at the buffer.)
            limit = self._starve_limit()
            if limit is not None and self._receive.statistics().current_buffer_used:
                limit = None  # an event is there: the receive does not wait
            try:
                if limit is None:
                    event = await self._receive.receive()
                else:
                    event = await self._receive_or_starve(limit)
            except EndOfStream:
                self._closed = True
                self._receive.close()
                if self._failure is not None:
                    raise self._failure from None
                if not self._complete:
                    # The driver was cancelled under the caller: the pool closed.
                    raise ClosedResourceError(
                        "the worker pool was closed during the iteration"
                    ) from None
                self._check_complete()
                self._finished(thread_time() - self._began_cpu)
                raise StopAsyncIteration from None
            if self._take(event):
                # Lanes waited for these results to be taken (an ordered map's window):
                # they start their next chunks now, before the caller goes through
                # these results without a trip through the event loop.
                await cancel_shielded_checkpoint()

    def _take(self, event: Any) -> bool:  # pragma: no cover - overridden
        """Take *event* from the driver; return whether lanes may now go on."""
        raise NotImplementedError

    def _check_complete(self) -> None:
        """Make sure that nothing was lost on the way, once the driver has ended."""

    def _finished(self, cpu: float) -> None:
        """The iteration has ended with every result handed over.

        *cpu*: the CPU seconds this thread spent since the work started.
        """

    def _starve_limit(self) -> float | None:
        """How long the caller, about to wait, may wait before it waits for too few lanes.

        ``None``: no limit (whatever the wait, more lanes would not shorten it).
        """
        return None

    def _starved(self) -> None:
        """The caller has waited longer than :meth:`_starve_limit` allowed, and waits on."""

    async def _receive_or_starve(self, limit: float) -> Any:
        # Told while the wait lasts, not once it ends: lanes started then still find
        # input to share. (An event sent as the deadline passes is not lost: the
        # receive is cancelled only while it waits, not once an event has reached it.)
        with anyio.move_on_after(limit):
            return await self._receive.receive()
        self._starved()
        return await self._receive.receive()

    def _stop(self) -> None:
        """Cancel the driver's work: what has not started is dropped."""
        self._halt_work()
        self._scope.cancel()

    def _halt_work(self) -> None:
        """Let no further work start (the driver's own rule, if it has one)."""

    async def aclose(self) -> None:
        """Stop the work and wait for it to end.

        Chunks (or the generator) not started are dropped; what runs finishes, or, with
        ``cancellable=True``, its workers are killed. Once this returns, nothing of this
        iteration runs in any worker.
        """
        self._closed = self._aclosed = True
        self._drop_items()
        if self._done.is_set():
            self._halt_work()  # the driver has ended: no cancel scope to cancel
        else:
            self._stop()
        interrupt: KeyboardInterrupt | None = None
        if self._started:
            with CancelScope(shield=True):
                # The work ends first, even if a Ctrl-C comes meanwhile (on Trio).
                interrupt = await wait_through_interrupts(self._done)
        self._receive.close()
        if interrupt is not None:
            raise interrupt

    def _drop_items(self) -> None:
        """Forget the results at hand.

        The shared iterator is run to its end, so that a results generator stepping it
        finds nothing more at its next step; the lists behind it are dropped.
        """
        deque(self._at_hand, maxlen=0)
        self._lists.clear()

    def abandon(self) -> None:
        """The caller dropped its results object: stop the work, in the background."""
        self._closed = True
        self._receive.close()
        if not self._started:
            self._send.close()
        elif not self._done.is_set() and threading.get_ident() == self._thread:
            with suppress(Exception):  # the event loop may already be gone
                # No new chunk either: a lane woken before this (its wait for the
                # window or the input already over) would not see the cancellation
                # before it takes a worker and sends one.
                self._halt_work()
                self._scope.cancel()

    # -- the driver ----------------------------------------------------------------

    async def _run_driver(self) -> None:
        try:
            with self._scope:
                await self._drive()
                self._complete = True
        except BaseException as exc:
            # Not the pool's business: on Trio a Ctrl-C becomes a KeyboardInterrupt in
            # whichever task runs when it comes, a lane as well as the caller's task. It
            # comes out of the caller's iteration, not out of the pool's own task group.
            cancelled = get_cancelled_exc_class()
            others = [leaf for leaf in _leaves(exc) if not isinstance(leaf, cancelled)]
            if not others:
                raise  # the pool is closing: its task group cancels this task
            self._failure = others[0]
        finally:
            self._send.close()
            self._done.set()

    async def _drive(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _put(self, event: Any) -> bool:
        """Hand *event* to the caller; ``False`` if the caller has stopped reading.

        Without a trip through the event loop when there is room: a lane goes straight
        on to its next chunk, and the worker is not left idle while the caller uses
        these results.
        """
        try:
            try:
                self._send.send_nowait(event)
            except WouldBlock:
                await self._send.send(event)
        except (ClosedResourceError, anyio.BrokenResourceError):
            return False
        return True


class _MapCore(_Core[T]):
    """A map's state: its input, chunks, lanes and counts.

    It is over 300 lines on purpose: choosing chunk sizes, holding ordered results back,
    keeping a chunk queued on each lane and the rules for leaving early all read and
    move the same few counters and queues, under one set of invariants; split apart,
    each piece would reach into the others' state.
    """

    def __init__(
        self,
        pool: WorkerPool,
        func: Callable[[Any], T],
        items: Iterable[Any] | AsyncIterable[Any],
        *,
        chunksize: int | None,
        ordered: bool,
        cancellable: bool,
    ) -> None:
        # One lane per worker the pool may run; the default pool of to_process has no
        # limit of its own, and gets one lane per CPU.
        workers = pool.max_workers
        if workers > MAX_LANES:
            workers = os.cpu_count() or 1
        length: int | None = None
        if not isinstance(items, AsyncIterable):
            with suppress(TypeError):  # no length: a generator, say
                length = len(items)  # type: ignore[arg-type]
        if length is not None:
            # No more lanes than items: a lane that would find nothing to take costs
            # a task and passes through the event loop, a large share of a short map.
            workers = min(workers, length)
        #: How many chunks are under way at once, at most: one per worker.
        self.lanes = max(1, workers)
        # How many lanes run: at first, as many as the last map of this function
        # measured that it needed (see _finished), or all of them; the others start when
        # the caller waits for the lanes (see _starved), or when a worker waits for the
        # caller's CPU (see _run_lane).
        needed = pool._lanes_estimate(func)
        self.running_lanes = self.lanes if needed is None else max(1, min(self.lanes, needed))
        # Whether this map began with fewer lanes than it may, and whether they ran by
        # turns with the event loop (see _took_turns): the pool decides the lanes of
        # the maps after it by both.
        self._began_fewer = self.running_lanes < self.lanes
        self._ran_by_turns = False
        self._lane_group: TaskGroup | None = None
        self._runners: list[_Lane] = []  # the running lanes' runners
        # The CPU seconds the workers spent on this map's chunks, from the lanes that
        # have ended; None once one of them could not tell.
        self._worker_seconds: float | None = 0.0
        # Ordered: a chunk may start only this many chunks ahead of the first one the
        # caller still waits for, which bounds what is held back.
        self._window = 4 * self.lanes
        super().__init__(pool, self._window + self.lanes)
        self._func = func
        self._ordered = ordered
        self._cancellable = cancellable
        self._fixed = chunksize
        self.chunksize = chunksize or 1
        self._per_item: float | None = None
        self._work = 0.0  # seconds and items measured, halved at each new measurement
        self._items = 0.0
        self.total = length
        if isinstance(items, AsyncIterable):
            self._async_source: AsyncIterator[Any] | None = aiter(items)
            self._source: Iterator[Any] | None = None
        else:
            self._source = iter(items)
            self._async_source = None
        self._plain_source = type(items) in (list, tuple, range)
        # A list is cut into chunks by slicing, a copy in one C call, at the positions
        # its own iterator would reach (it too reads by position, and sees items
        # appended meanwhile).
        self._list: list[Any] | None = items if type(items) is list else None
        if chunksize is None and self.total is not None:
            # A function mapped before in this pool starts at the size its last map
            # measured, not at 1: a map called again and again (over batches of data,
            # say) does not go through the ramp each time. Only with a length, whose
            # cap keeps several chunks per worker whatever the estimate says.
            per_item = pool._per_item_estimate(func)
            if per_item is not None:
                self._size_for(per_item)
                # Weighed as one chunk of the size this map will cut: a first chunk
                # that finds the function far slower than the last map did (on other
                # data, say) then sets the size for the next, not a tenth of it.
                self._items = float(self._capped_size())
                self._work = per_item * self._items
        self.submitted = 0
        self.completed = 0
        self.failed_index: int | None = None
        # The driver's view.
        self._taken = 0  # items taken from the source
        self._numbered = 0  # chunks taken
        self._exhausted = False
        self._halted = False  # no chunk starts any more (an error, or closing)
        self._first_failed: int | None = None  # the lowest number of a chunk that failed
        self._window_moved = anyio.Event()
        self._window_waiters = 0
        self._prefetched: MemoryObjectReceiveStream[Any] | None = None
        self._source_error: BaseException | None = None
        self._source_lock = anyio.Lock()
        # The caller's view (ordered): chunks by number, and the next one due.
        self._held: dict[int, _Chunk] = {}
        self._due = 0
        self._accepted = 0  # chunks handed over to the caller

    # -- chunk sizes -----------------------------------------------------------------

    def _next_size(self) -> int:
        if self._fixed is not None:
            return self._fixed
        size = self._capped_size()
        numbered, per_item = self._numbered, self._per_item
        if (
            numbered < len(RAMP_SHARES)
            and per_item is not None
            and size * per_item >= RAMP_MIN_SECONDS
        ):
            size = math.ceil(size * RAMP_SHARES[numbered])
        return max(1, size)

    def _capped_size(self) -> int:
        """The automatic size, within the cap of an input of known length."""
        size = self.chunksize
        if self.total is not None:
            # By the lanes that run, and a chunk's share for each lane that may start
            # later: a map that runs one of its two lanes (its event loop sets the pace)
            # does not cut chunks that it will not run side by side, and still leaves
            # items for the lane it starts if the function turns out slower than the
            # last map measured (see _starved). From then on, every lane counts.
            running = max(1, self.running_lanes)
            shares = CHUNKS_PER_WORKER * running + (self.lanes - running)
            size = min(size, math.ceil(self.total / shares))
        return max(1, size)

    def _measured(self, count: int, seconds: float) -> None:
        if self._fixed is not None or count <= 0:
            return
        # Smoothed, weighted by items: one chunk delayed by the event loop (or a worker's
        # start) should not swing the size for the next, and the first chunks, small and
        # mostly round trip, count for little once larger ones have been measured (an
        # average per chunk would let a first chunk of one item hold the size down).
        self._work = self._work / 2 + max(seconds, 1e-7)
        self._items = self._items / 2 + count
        per_item = self._work / self._items
        self._size_for(per_item)
        self._pool._keep_per_item_estimate(self._func, per_item)

    def _size_for(self, per_item: float) -> None:
        self._per_item = per_item
        self.chunksize = max(1, min(MAX_AUTO_CHUNK, int(TARGET_CHUNK_SECONDS / per_item)))

    # -- the driver ------------------------------------------------------------------

    async def _drive(self) -> None:
        if self._async_source is None:
            await self._run_lanes()
            return
        async with anyio.create_task_group() as reader:
            send, self._prefetched = anyio.create_memory_object_stream[Any](SOURCE_READ_AHEAD)
            reader.start_soon(self._read_source, send)
            try:
                await self._run_lanes()
            finally:
                # Every lane has ended: stop reading the async source.
                reader.cancel_scope.cancel()
                self._prefetched.close()

    async def _run_lanes(self) -> None:
        # The driver's own task runs the last lane: one task fewer to start per map.
        if self.lanes == 1:
            await self._lane()
            return
        async with anyio.create_task_group() as others:
            self._lane_group = others
            for _ in range(self.running_lanes - 1):
                others.start_soon(self._lane)
            try:
                await self._lane()
            finally:
                # No lane starts once this one has ended: the input is over, or the map
                # has stopped.
                self._lane_group = None

    def _starve_limit(self) -> float | None:
        if not self._may_starve():
            return None
        # Far longer than the caller spent on the last results: the lanes fall far
        # behind it.
        return LANE_WAIT_RATIO * (perf_counter() - self._handed)

    def _may_starve(self) -> bool:
        # Only with lanes to add, once the first chunk has come (the wait for it is the
        # start, whatever the lanes), while input remains, and while every running lane
        # has a chunk under way that the caller has not been given. Not with a later
        # chunk held back for an earlier one (the caller waits for that one lane, which
        # no new lane would help), nor with an answer already there, only waiting for
        # its lane to read it, which the caller's own stepping through the last results
        # kept from running.
        return not (
            self._lane_group is None
            or self.running_lanes >= self.lanes
            or not self._accepted
            or self._held
            or not self._input_left()
            or self._halted
            or self._numbered - self._accepted < self.running_lanes
            or any(runner.answer_arrived() for runner in self._runners)
        )

    def _starved(self) -> None:
        # (The input may have run out, or the map stopped, while the caller waited: a
        # lane started then would find nothing to take.)
        if self._input_left() and not self._halted:
            self._add_lanes()

    def _input_left(self) -> bool:
        """Whether items may remain to be taken.

        An input of known length has none once that many were taken, before a take
        finds it at its end. (A list grown meanwhile still gives the items added: only
        lanes are not started for them.)
        """
        return not self._exhausted and (self.total is None or self._taken < self.total)

    def _took_turns(self, runner: _Lane) -> bool:
        """Whether *runner*'s worker and the event loop took turns on one CPU.

        Measured since the lane's last answer: there, every lane runs faster than fewer.
        """
        if self.running_lanes >= self.lanes or self._lane_group is None or not self._input_left():
            return False
        share = runner.waited_share()
        return share is not None and share >= TURNS_SHARE

    def _add_lanes(self) -> None:
        """Start every lane that does not run yet."""
        group = self._lane_group
        if group is None:
            return
        more = self.lanes - self.running_lanes
        self.running_lanes = self.lanes
        for _ in range(more):
            group.start_soon(self._lane)

    def _finished(self, cpu: float) -> None:
        # Lanes needed: the workers' CPU time over the CPU time of the thread that runs
        # the lanes and the caller (sending chunks, reading and unpickling answers,
        # stepping through the results, and whatever else the caller does there),
        # rounded up. With less worker time than that, one worker makes results faster
        # than this thread takes them. Kept for the next map of this function, not
        # capped by this map's length, so that a short map does not hold a long one
        # down. Not kept when a worker's CPU time is unknown (a backend or a system that
        # does not tell), which leaves the next map with every lane.
        work = self._worker_seconds
        if work is None or cpu <= 0 or not self.completed:
            return
        if self._began_fewer and not self._ran_by_turns:
            self._pool._lanes_side_by_side()
        self._pool._keep_lanes_estimate(self._func, max(1, math.ceil(work / cpu)))

    async def _read_source(self, send: MemoryObjectSendStream[Any]) -> None:
        source = self._async_source
        assert source is not None
        with send:
            try:
                async for item in source:
                    await send.send((True, item))
            except Exception as exc:
                await send.send((False, exc))
            finally:
                # Left early: an async generator given as the input runs its clean-up
                # now, in this loop, rather than whenever it is collected.
                aclose = getattr(source, "aclose", None)
                if aclose is not None:
                    with CancelScope(shield=True):
                        await aclose()

    async def _take_chunk(self) -> tuple[int, int, list[Any]] | None:
        """Take the next chunk from the source: (number, first position, items)."""
        if self._ordered:
            while not self._halted and self._numbered >= self._due + self._window:
                self._window_waiters += 1
                try:
                    await self._window_moved.wait()
                finally:
                    self._window_waiters -= 1
        if self._source is not None:
            return self._take_from_iterator(self._source)
        # An async source is read by one lane at a time, from its first item to its
        # numbering: the chunks then hold consecutive items, numbered in input order,
        # however the lanes are scheduled.
        async with self._source_lock:
            return await self._take_from_async()

    def _take_start(self) -> bool:
        """Whether a chunk may be taken now; raises a source error left for now."""
        if self._source_error is not None:
            error, self._source_error = self._source_error, None
            self._halted = True
            raise error
        return not (self._halted or self._exhausted)

    def _source_failed(self, error: BaseException, items: list[Any]) -> None:
        """Note *error* of the input; raise it now unless items come before it."""
        self._exhausted = True
        _note(error, f"raised by the input of the map, after {self._taken + len(items)} items")
        if not items:
            self._halted = True
            raise error
        self._source_error = error  # raised once the items before it are sent

    def _number(self, items: list[Any]) -> tuple[int, int, list[Any]] | None:
        if not items:
            return None
        number, start = self._numbered, self._taken
        self._taken += len(items)
        self._numbered += 1
        return number, start, items

    def _take_from_iterator(self, source: Iterator[Any]) -> tuple[int, int, list[Any]] | None:
        if not self._take_start():
            return None
        if self._list is not None:
            start = self._taken
            items = self._list[start : start + self._next_size()]
            if not items:
                self._exhausted = True
            return self._number(items)
        if self._plain_source:
            # A list, tuple or range cannot fail: its items are taken in one C call.
            items = list(islice(source, self._next_size()))
            if not items:
                self._exhausted = True
            return self._number(items)
        items = []
        try:
            for _ in range(self._next_size()):
                items.append(next(source))
        except StopIteration:
            self._exhausted = True
        except Exception as exc:
            self._source_failed(exc, items)
        return self._number(items)

    async def _take_from_async(self) -> tuple[int, int, list[Any]] | None:
        if not self._take_start():
            return None
        prefetched = self._prefetched
        assert prefetched is not None
        size = self._next_size()
        items: list[Any] = []
        # At least one item, waiting for it; then what has come in already.
        try:
            ok, item = await prefetched.receive()
        except EndOfStream:
            self._exhausted = True
        else:
            if ok:
                items.append(item)
                self._gather_read_ahead(prefetched, items, size)
            else:
                self._source_failed(item, items)
        if self._halted:
            return None
        return self._number(items)

    def _take_chunk_nowait(self) -> tuple[int, int, list[Any]] | None:
        """The next chunk if it can be had without waiting (window open, items at hand)."""
        if self._halted or self._exhausted:
            return None
        if self._ordered and self._numbered >= self._due + self._window:
            return None
        try:
            if self._source is not None:
                return self._take_from_iterator(self._source)
            return self._take_read_ahead()
        except Exception as exc:
            # The input failed before any item of this chunk: raised by the next take,
            # once the chunk under way has been handed over (it comes first in order).
            self._source_error = exc
            return None

    def _take_read_ahead(self) -> tuple[int, int, list[Any]] | None:
        """A chunk of the items an async source has already given, if any."""
        prefetched = self._prefetched
        if prefetched is None or self._source_lock.locked() or self._source_error is not None:
            return None  # (a lane waits for the source: it takes the next items)
        items: list[Any] = []
        self._gather_read_ahead(prefetched, items, self._next_size())
        return self._number(items)

    def _gather_read_ahead(
        self,
        prefetched: MemoryObjectReceiveStream[Any],
        items: list[Any],
        size: int,
    ) -> None:
        """Add to *items*, up to *size* of them, the read-ahead items already there."""
        try:
            while len(items) < size:
                ok, item = prefetched.receive_nowait()
                if not ok:
                    self._source_failed(item, items)
                    return
                items.append(item)
        except WouldBlock:
            pass
        except EndOfStream:
            self._exhausted = True

    def _may_wait_for_input(self) -> bool:
        """Whether taking the next chunk may wait (for the window, or an async input)."""
        if self._source is None:
            return True
        return self._ordered and self._numbered >= self._due + self._window

    async def _lane(self) -> None:
        runner = self._pool._chunk_runner(
            self._func,
            cancellable=self._cancellable,
            split=self._fixed is None,
            # (A map of one lane at most has nothing to choose.)
            measure=self.lanes > 1,
        )
        self._runners.append(runner)
        try:
            await self._run_lane(runner)
        finally:
            self._runners.remove(runner)
            # A chunk queued behind the last one is dropped (or awaited, if begun).
            await runner.aclose()
            seconds = runner.worker_seconds
            if seconds is None or self._worker_seconds is None:
                self._worker_seconds = None
            else:
                self._worker_seconds += seconds

    async def _run_lane(self, runner: Any) -> None:
        spans: dict[int, tuple[int, int]] = {}  # chunk number -> (first position, count)
        waiting: tuple[int, int, list[Any]] | None = None  # taken, to be sent next
        stepping_back = False  # this lane takes no more chunks (see _took_turns)
        while True:
            if not runner.busy:
                if stepping_back and waiting is None:
                    return
                chunk = waiting
                waiting = None
                if chunk is None or not self._wanted(chunk[0]):
                    if self._may_wait_for_input():
                        runner.hand_back()  # no worker held while the input is awaited
                    try:
                        chunk = await self._take_chunk()
                    except Exception as exc:
                        self._failed(self._numbered)  # (the input's error comes last)
                        await self._put(_Chunk(self._numbered, [], exc))
                        return
                if chunk is None:
                    return
                # A worker first: its start may take long, and may end after the map
                # stopped (the caller saw an error, or left) without a checkpoint in
                # between. The chunk taken is then dropped, not sent.
                await runner.ready()
                if not self._wanted(chunk[0]):
                    return
                number, start, items = chunk
                spans[number] = (start, len(items))
                self.submitted += len(items)
                await runner.submit(number, items)
            if runner.can_queue() and waiting is None and not stepping_back:
                chunk = self._take_chunk_nowait()
                if chunk is not None:
                    number, start, items = chunk
                    spans[number] = (start, len(items))
                    self.submitted += len(items)
                    if not runner.queue(number, items):
                        waiting = chunk
                        self.submitted -= len(items)
                        del spans[number]
            try:
                number, results, took = await runner.result()
            except BatchError as exc:
                number = runner.current
                start, _ = spans.pop(number)
                index = start + exc.index
                self.completed += len(exc.results)
                _note(exc.error, f"raised by item {index} of the map")
                self._failed(number)
                await self._put(_Chunk(number, exc.results, exc.error, index))
                return
            except Exception as exc:
                number = runner.current
                start, count = spans.pop(number)
                last = start + count - 1
                span = f"item {start}" if last == start else f"items {start} to {last}"
                _note(exc, f"raised while {span} of the map ran")
                self._failed(number)
                await self._put(_Chunk(number, [], exc))
                return
            start, count = spans.pop(number)
            self._measured(count, took)
            self.completed += len(results)
            if not stepping_back and self._took_turns(runner):
                if not self._ran_by_turns:
                    self._ran_by_turns = True
                    self._pool._lanes_ran_by_turns()
                # The other lanes start, and a lone lane steps back: its worker shares
                # the event loop's CPU, the new ones are woken on others. (Adding lanes
                # and keeping this one ran no faster in the map after this one, which
                # began on this worker again: the one the pool hands out first.)
                # (A lone lane is the driver's own, whose end closes the map to new
                # lanes: the ones started here run the rest.)
                alone = self.running_lanes == 1
                self._add_lanes()
                if alone:
                    self.running_lanes -= 1
                    stepping_back = True
                    runner.step_back()
            if not await self._put(_Chunk(number, results)):
                self._halt()
                return

    def _halt(self) -> None:
        self._halted = True
        self._window_moved.set()

    def _failed(self, number: int) -> None:
        """Chunk *number* failed: no chunk starts any more, but those still needed."""
        if self._first_failed is None or number < self._first_failed:
            self._first_failed = number
        self._halt()

    def _wanted(self, number: int) -> bool:
        """Whether chunk *number*, taken from the input already, is still to be run.

        Not once the caller has stopped reading. After a chunk failed, only in input
        order and before it: the caller gets every result that comes before the error.
        """
        if self._closed:
            return False
        failed = self._first_failed
        if failed is None:
            return not self._halted
        return self._ordered and number < failed

    # -- the caller's side -------------------------------------------------------------

    def _take(self, event: _Chunk) -> bool:
        if event.number < 0:  # the driver failed, or the pool closed
            self._raise = event.error
            return False
        if not self._ordered:
            self._accept(event)
            return False
        self._held[event.number] = event
        moved = False
        while self._due in self._held and self._raise is None:
            self._accept(self._held.pop(self._due))
            self._due += 1
            moved = True
        if not (moved and self._window_waiters):
            return False
        waiting, self._window_moved = self._window_moved, anyio.Event()
        waiting.set()
        return True

    def _check_complete(self) -> None:
        # Every chunk taken from the input was handed over, in order or not: an
        # iteration never ends quietly with results missing.
        if self._held or self._accepted != self._numbered:
            raise RuntimeError(
                f"the map ended with {self._numbered - self._accepted} of its "
                f"{self._numbered} chunks unaccounted for"
            )

    def _accept(self, event: _Chunk) -> None:
        self._accepted += 1
        # A list of its own: a backend may reuse the one it handed over.
        self._lists.append(list(event.results))
        if event.error is not None:
            self.failed_index = event.error_index
            self._raise = event.error
            self._halt()

    def _halt_work(self) -> None:
        self._halt()


class _StreamCore(_Core[T]):
    """A stream's state: its request, and the items that arrived."""

    def __init__(
        self,
        pool: WorkerPool,
        *,
        cancellable: bool,
        request: Any,
    ) -> None:
        # No buffer between the driver and the caller: a driver that cannot hand a
        # group over stops reading, and the worker then stops too.
        super().__init__(pool, 0)
        self._cancellable = cancellable
        self._request = request
        self.received = 0

    async def _drive(self) -> None:
        async def forward(group: list[Any]) -> None:
            self.received += len(group)
            if not await self._put(group):
                # The caller has stopped reading: stop the generator.
                self._scope.cancel()

        try:
            await self._pool._run_stream(self._request, self._cancellable, forward)
        except Exception as exc:
            await self._put(_Chunk(-1, [], exc))

    def _take(self, event: Any) -> bool:
        if isinstance(event, _Chunk):
            self._raise = event.error
        else:
            self._lists.append(list(event))
        return False


def _iterate(handle: _Handle[T]) -> AsyncIterator[T]:
    """An async generator of the results of *handle* (see :meth:`_Handle.__aiter__`)."""
    agen = _results(handle)
    # Not under the event loop's async generator hooks, which a generator left at a
    # ``yield`` would pay for (asyncio schedules a task to close it; Trio warns that it
    # was not exhausted): there is nothing to clean up at that ``yield``, and without
    # hooks CPython closes the generator at once when it is dropped. The hooks are
    # taken by a generator when it is first stepped, so it is stepped here, with none
    # set, to its first ``yield``, which gives nothing to the caller. (Closing or
    # dropping a first, unstarted ``__anext__`` instead does not work everywhere: it
    # ends the generator on 3.13, and warns of a never-awaited ``asend`` before it.)
    hooks = sys.get_asyncgen_hooks()
    sys.set_asyncgen_hooks(firstiter=None, finalizer=None)
    try:
        agen.__anext__().send(None)
    except StopIteration:
        pass  # at the priming yield, as expected
    finally:
        sys.set_asyncgen_hooks(firstiter=hooks.firstiter, finalizer=hooks.finalizer)
    return agen


async def _results(handle: _Handle[T]) -> AsyncGenerator[T, None]:
    # It holds the results object while it runs, as ``async for`` over that object
    # would: ``async for x in pool.map(...)`` keeps the work going. Left with
    # ``break``, the generator is closed and dropped at once (no hooks), and so is the
    # results object with it, whose finalizer stops the work.
    core = handle._core
    yield None  # type: ignore[misc]  # the priming step of _iterate, never seen
    while True:
        # The iterator that __anext__ steps too: the two may be mixed. Closing runs it
        # to its end, and this loop then ends at its next step.
        at_hand = core._at_hand
        for item in at_hand:
            yield item
        if core._at_hand is not at_hand:
            continue  # __anext__ moved on to the next results meanwhile
        try:
            await core._fill()
        except StopAsyncIteration:
            return


class _Handle(Generic[T]):
    """The caller's side of a map or a stream: iteration, closing, the finalizer."""

    _core: _Core[T]

    async def __aenter__(self) -> Self:
        self._core._start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        await self._core.aclose()

    def __aiter__(self) -> AsyncIterator[T]:
        # Before Python 3.12, ``async for`` steps an async generator's own iterator, in
        # C, for less than what a call of the ``async def __anext__`` below costs (a
        # coroutine made and run per item): the generator hands out the same results,
        # from the same buffer, with the same checkpoint per refill. Calling
        # ``__anext__`` on this object stays possible, and the two may be mixed. From
        # 3.12 on it is the other way round: a step of an async generator costs about
        # half as much again as a coroutine of ``__anext__`` (measured per item with
        # the results at hand on 3.12 and 3.13; a map of 20,000 tiny calls on two
        # workers ran about a fifth faster with ``__anext__`` there, and about a fifth
        # slower on 3.11), so ``async for`` steps this object itself.
        if _ASYNC_FOR_STEPS_ANEXT:
            return self
        return _iterate(self)

    async def __anext__(self) -> T:
        # The path of every item: a result at hand is handed out with no suspension and
        # as little work as can be (closing the results runs the shared iterator to its
        # end, and nothing refills it). The checkpoint comes once per refill, in _fill:
        # once per chunk of a map, once per frame of a stream.
        core = self._core
        for item in core._at_hand:
            return item
        await core._fill()
        return next(core._at_hand)

    async def aclose(self) -> None:
        """Stop the work and wait for it to end.

        What has not started is dropped; what runs finishes, or, with
        ``cancellable=True``, its workers are killed. Once this returns, nothing of this
        iteration runs in any worker, and iterating further raises
        :exc:`anyio.ClosedResourceError`.
        """
        await self._core.aclose()

    def __del__(self) -> None:
        # A plain ``async for`` left with ``break`` drops this object without closing
        # it: the work is cancelled here, and ends in the background.
        core = getattr(self, "_core", None)
        if core is not None:
            core.abandon()


class MapResults(_Handle[T]):
    """The results of ``WorkerPool.map``.

    An async iterator of the results, and an async context manager that stops the
    outstanding work when its block is left. The counts are there for progress bars.
    """

    def __init__(self, core: _MapCore[T]) -> None:
        self._core = core
        self._map = core

    @property
    def submitted(self) -> int:
        """Items sent to workers so far."""
        return self._map.submitted

    @property
    def completed(self) -> int:
        """Items whose results came back so far."""
        return self._map.completed

    @property
    def total(self) -> int | None:
        """The number of items, if the input has a length, else ``None``."""
        return self._map.total

    @property
    def failed_index(self) -> int | None:
        """The position of the item whose exception ended the iteration, once one did."""
        return self._map.failed_index

    @property
    def chunksize(self) -> int:
        """The number of items the next chunk takes (it changes with ``chunksize=None``)."""
        return self._map._next_size()

    @property
    def lanes(self) -> int:
        """The most chunks that run at once: one per worker, at most one per item."""
        return self._map.lanes

    @property
    def running_lanes(self) -> int:
        """The lanes that run now, at most :attr:`lanes`.

        The first map of a function in a pool runs every lane. A later one starts with
        as many as the last complete map of that function measured that its caller
        could keep busy, and starts the others if its caller waits for results far
        longer than it spent on the last ones, or if a worker or the event loop's
        thread waited for a CPU about as long as it ran (the two took turns on one CPU).
        """
        return self._map.running_lanes


class StreamResults(_Handle[T]):
    """The items of ``WorkerPool.stream``.

    An async iterator of the items a generator function yields in a worker, and an async
    context manager that closes the generator when its block is left.
    """

    def __init__(self, core: _StreamCore[T]) -> None:
        self._core = core
        self._stream = core

    @property
    def received(self) -> int:
        """Items that have arrived so far."""
        return self._stream.received
