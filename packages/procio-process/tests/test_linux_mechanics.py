"""On Linux: no thread per child and no SIGCHLD handler, on every backend."""

from __future__ import annotations

import signal
import sys
import threading

import anyio
import pytest
from procio_process import open_process, run_process

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(sys.platform != "linux", reason="pidfds are Linux's"),
]


async def test_waiting_uses_no_thread_and_no_sigchld_handler() -> None:
    handler_before = signal.getsignal(signal.SIGCHLD)
    threads_before = set(threading.enumerate())
    seen: set[threading.Thread] = set()

    async def watch_threads() -> None:
        while True:
            seen.update(threading.enumerate())
            await anyio.sleep(0.01)

    async with anyio.create_task_group() as tg:
        tg.start_soon(watch_threads)
        await run_process(["sleep", "0.2"])
        async with await open_process(["sleep", "0.2"]) as process:
            assert process.stdout is not None
            async with anyio.create_task_group() as inner:
                inner.start_soon(process.wait)
                inner.start_soon(process.wait)
                with pytest.raises(anyio.EndOfStream):
                    await process.stdout.receive()
        tg.cancel_scope.cancel()
    assert seen - threads_before == set()
    assert signal.getsignal(signal.SIGCHLD) == handler_before
