"""Backend module: the running event loop's own task, clock and identity, on asyncio and Trio.

AnyIO has no public way to start a task outside the caller's task group that ends with
the event loop, which is what the default pool of ``to_process`` needs; this module is
the one place that reaches for the running event loop to get one, and to read its clock
and tell loops apart without going through AnyIO on every call.

Which event loop runs the caller is decided as AnyIO decides it, through sniffio (never
by asking asyncio whether a loop runs): Trio running as a guest on an asyncio loop is
Trio, although asyncio's loop runs too.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import types
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Protocol, TypeVar

from anyio.lowlevel import cancel_shielded_checkpoint, checkpoint_if_cancelled

logger = logging.getLogger("procio.workers")

_keep_alive: set[Any] = set()

_Func = TypeVar("_Func", bound=Callable[..., Any])


def _current_library() -> str | None:
    """Return the name of the async library running the caller, as sniffio sees it.

    Trio depends on sniffio and imports it: if nothing imported it, Trio is not running,
    and the caller runs on asyncio.
    """
    sniffio: Any = sys.modules.get("sniffio")
    if sniffio is None:
        return None
    try:
        name: str = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return None
    return name


def _trio() -> Any:
    """Return the ``trio`` module if the caller runs on Trio, else ``None``."""
    return sys.modules["trio"] if _current_library() == "trio" else None


def interrupts_go_to_main_task(func: _Func) -> _Func:
    """Return *func*, to start as a task in which a Ctrl-C never lands.

    On Trio a SIGINT becomes a KeyboardInterrupt in whatever unprotected code runs when
    it comes. In one of the pool's own background tasks (forwarding a worker's output,
    watching for its exit, reaping it, the idle timer) that would leave the task's work
    undone, a worker's pipes never closed or a killed worker never counted as reaped,
    with a closing or a cancelled call waiting for it for ever; and the interrupt would
    end the pool's task group instead of reaching the program. Marked with Trio's own
    protection, the task goes on, and Trio raises the interrupt in the main task at its
    next checkpoint, as it does for its own tasks. Elsewhere *func* is returned as it
    is: asyncio's runner turns a Ctrl-C into a cancellation of the main task.

    Trio marks the code of *func* (older releases wrap it instead), so the result is
    what must be started.
    """
    trio = _trio()
    if trio is None:
        return func
    protected: _Func = trio.lowlevel.enable_ki_protection(func)
    return protected


class _Event(Protocol):
    async def wait(self) -> None: ...


async def wait_through_interrupts(event: _Event) -> KeyboardInterrupt | None:
    """Wait until *event* is set, even through a Ctrl-C; return the last one that came.

    For waits the caller shields because the work waited for must end first (a worker
    reaped, a map's lane done). On Trio a KeyboardInterrupt reaches the main task even
    in a shielded wait: the wait goes on to its end all the same, and the caller raises
    the interrupt once it has finished what it closes, as it came.
    """
    interrupt: KeyboardInterrupt | None = None
    while True:
        try:
            await event.wait()
        except KeyboardInterrupt as exc:
            interrupt = exc
        else:
            return interrupt


def spawn_loop_task(func: Callable[[], Awaitable[None]]) -> None:
    """Run *func* until the event loop ends; it is cancelled then, and may clean up.

    On asyncio, ``asyncio.run()`` and ``anyio.run()`` cancel every remaining task when
    the main one returns; on Trio, system tasks are cancelled the same way.
    """
    trio = _trio()
    if trio is not None:
        trio.lowlevel.spawn_system_task(_guarded, func)
        return
    task = asyncio.get_running_loop().create_task(_guarded(func))
    # The loop keeps only a weak reference to its tasks.
    _keep_alive.add(task)
    task.add_done_callback(_keep_alive.discard)


def loop_clock() -> Callable[[], float]:
    """Return the running event loop's clock: what ``anyio.current_time()`` reads."""
    trio = _trio()
    if trio is not None:
        clock: Callable[[], float] = trio.current_time
        return clock
    return asyncio.get_running_loop().time


def checkpoint_halves() -> tuple[Callable[[], Awaitable[None]], Callable[[], Awaitable[None]]]:
    """Return the running event loop's two halves of a checkpoint, without AnyIO's lookup.

    The first is ``checkpoint_if_cancelled``: a cancelled caller raises, others go on
    at once. The second is ``cancel_shielded_checkpoint``: other tasks run, and no
    cancel scope's cancellation lands there (it waits for the caller's next
    checkpoint), as AnyIO defines both.

    On asyncio the second costs a cancel scope of AnyIO's, entered and left, which takes
    longer than the one pass of the event loop it shields. Here it is that pass alone:
    the task waits on a future that is already done. AnyIO delivers a scope's
    cancellation to a task only while the future it waits on is not done (a task whose
    future is done is about to run, and would lose the cancellation), so the scope goes
    on trying until the task's next real wait: the semantics of a shielded checkpoint.
    A ``Task.cancel()`` of asyncio's own is not a scope's and is not held back, as
    AnyIO's shield does not hold it back either. The tests pin both behaviours.
    """
    library = _current_library()
    if library == "trio":
        trio = sys.modules["trio"]
        return trio.lowlevel.checkpoint_if_cancelled, trio.lowlevel.cancel_shielded_checkpoint
    if library == "asyncio":
        done = asyncio.get_running_loop().create_future()
        done.set_result(None)

        def one_pass() -> Awaitable[None]:
            return _wait_on_done(done)

        return checkpoint_if_cancelled, one_pass
    return checkpoint_if_cancelled, cancel_shielded_checkpoint


@types.coroutine
def _wait_on_done(done: asyncio.Future[None]) -> Generator[Any, None, None]:
    # What awaiting an unfinished future does, for a finished one: the task parks on it
    # (its waiter is *done*), is woken by the loop on its next pass, and goes on.
    done._asyncio_future_blocking = True
    yield done


def loop_key() -> object:
    """Return an object that stands for the running event loop (the loop, or Trio's token).

    It lives as long as the loop and may be weakly referenced.
    """
    trio = _trio()
    if trio is not None:
        token: object = trio.lowlevel.current_trio_token()
        return token
    return asyncio.get_running_loop()


async def _guarded(func: Callable[[], Awaitable[None]]) -> None:
    # An exception escaping a Trio system task would crash the whole run, and one
    # escaping an asyncio task that nobody awaits would go unseen: log it instead.
    try:
        await func()
    except Exception:
        logger.exception("the task hosting the default worker pool failed")
