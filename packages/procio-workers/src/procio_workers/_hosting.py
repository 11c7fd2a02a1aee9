"""Backend module: the running event loop's own task, clock and identity, on asyncio and Trio.

AnyIO has no public way to start a task outside the caller's task group that ends with
the event loop, which is what the default pool of ``to_process`` needs; this module is
the one place that reaches for the running event loop to get one, and to read its clock
and tell loops apart without going through AnyIO on every call.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from contextlib import suppress
from typing import Any

_keep_alive: set[Any] = set()


def spawn_loop_task(func: Callable[[], Awaitable[None]]) -> None:
    """Run *func* until the event loop ends; it is cancelled then, and may clean up.

    On asyncio, ``asyncio.run()`` and ``anyio.run()`` cancel every remaining task when
    the main one returns; on Trio, system tasks are cancelled the same way.
    """
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        # Not asyncio, so Trio (AnyIO's only other backend), which is imported already.
        trio: Any = sys.modules["trio"]
        trio.lowlevel.spawn_system_task(_guarded, func)
        return
    task = loop.create_task(_guarded(func))
    # The loop keeps only a weak reference to its tasks.
    _keep_alive.add(task)
    task.add_done_callback(_keep_alive.discard)


def loop_clock() -> Callable[[], float]:
    """Return the running event loop's clock: what ``anyio.current_time()`` reads."""
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop.time
    trio: Any = sys.modules["trio"]
    clock: Callable[[], float] = trio.current_time
    return clock


def loop_key() -> object:
    """Return an object that stands for the running event loop (the loop, or Trio's token).

    It lives as long as the loop and may be weakly referenced.
    """
    loop = asyncio._get_running_loop()
    if loop is not None:
        return loop
    trio: Any = sys.modules["trio"]
    token: object = trio.lowlevel.current_trio_token()
    return token


async def _guarded(func: Callable[[], Awaitable[None]]) -> None:
    # An exception escaping a Trio system task would crash the whole run; the default
    # pool's host reports nothing anyone could act on, so it ends quietly instead.
    with suppress(Exception):
        await func()
