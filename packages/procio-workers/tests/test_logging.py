"""The pool tells the ``procio.workers`` logger what happens to its workers."""

from __future__ import annotations

import logging
import os
import signal
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, WorkerPool

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio
TIMEOUT = 60


def _messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage() for r in caplog.records if r.name == "procio.workers" and r.levelno == level
    ]


async def test_a_worker_lost_mid_call_is_logged_naming_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="procio.workers")
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(max_workers=1) as pool:
            pid = await pool.run_sync(os.getpid)
            with pytest.raises(BrokenWorkerProcess):
                await pool.run_sync(funcs.kill_self, signal.SIGKILL)
    # At INFO: the caller already has the BrokenWorkerProcess, so nothing reaches
    # stderr through logging's last-resort handler in a program that set up no logging.
    lost = _messages(caplog, logging.INFO)
    assert len(lost) == 1, lost
    assert lost[0].startswith(f"worker {pid} lost during a call: ")
    assert "SIGKILL" in lost[0]
    # Its start was logged too, at debug level, and nothing as a warning or an error.
    assert f"worker {pid} started" in _messages(caplog, logging.DEBUG)
    assert _messages(caplog, logging.WARNING) == []
    assert _messages(caplog, logging.ERROR) == []


async def test_retirements_are_logged_with_their_reason(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="procio.workers")
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(max_workers=1, max_tasks_per_worker=2) as pool:
            first = await pool.run_sync(os.getpid)
            await pool.run_sync(os.getpid)
            second = await pool.run_sync(os.getpid)
    debug = _messages(caplog, logging.DEBUG)
    assert f"worker {first} retired after 2 calls (max_tasks_per_worker)" in debug
    assert second != first
    assert f"worker {second} started" in debug
    assert _messages(caplog, logging.WARNING) == []
