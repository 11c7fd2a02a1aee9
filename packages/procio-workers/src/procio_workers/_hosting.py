"""Backend module: a task that lives as long as the event loop, on asyncio and Trio.

AnyIO has no public way to start a task outside the caller's task group that ends with
the event loop, which is what the default pool of ``to_process`` needs; this module is
the one place that reaches for the running event loop to get one.
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


async def _guarded(func: Callable[[], Awaitable[None]]) -> None:
    # An exception escaping a Trio system task would crash the whole run; the default
    # pool's host reports nothing anyone could act on, so it ends quietly instead.
    with suppress(Exception):
        await func()
