"""The path used where pidfds are missing (macOS, old kernels, strict sandboxes).

The tests switch pidfds off, so that Linux runs the same code as macOS: a thread waits
for the child's exit (with Popen.wait(), as on macOS, or with waitid as Linux does) and
run_process uses one task per pipe.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial

import anyio
import pytest
from procio_process import _waiting, open_process, run_process

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]


@pytest.fixture(autouse=True, params=["waitid", "Popen.wait"])
def without_pidfds(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Switch pidfds off; the thread waits with waitid(WNOWAIT) or with Popen.wait()."""
    if request.param == "waitid" and sys.platform != "linux":
        pytest.skip("the thread uses waitid(WNOWAIT) on Linux only")
    monkeypatch.setattr(_waiting, "_pidfd_usable", False)
    monkeypatch.setattr(_waiting, "_USE_WAITID", request.param == "waitid")


async def test_wait_without_pidfd(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with await open_process(["sh", "-c", "sleep 0.1; exit 3"]) as process:
        assert process._pidfd is None
        assert await process.wait() == 3
    check()


async def test_run_process_without_pidfd(leak_guard: StartGuard) -> None:
    check = leak_guard()
    result = await run_process(["cat"], input=b"x" * 300_000)
    assert result.stdout == b"x" * 300_000
    with pytest.raises(subprocess.CalledProcessError):
        await run_process(["false"])
    # A child that exits without reading its input: a plain result, no ExceptionGroup.
    assert (await run_process(["true"], input=b"x" * 2_000_000)).returncode == 0
    with pytest.raises(subprocess.CalledProcessError):
        await run_process(["false"], input=b"x" * 2_000_000)
    check()


async def test_cancelled_wait_without_pidfd_leaves_the_child_running() -> None:
    async with await open_process(["sleep", "30"]) as process:
        with anyio.move_on_after(0.05):
            await process.wait()
        assert process.returncode is None
        process.kill()
        assert await process.wait() == -signal.SIGKILL


async def test_cancellation_without_pidfd_reaps_the_child(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with anyio.create_task_group() as tg:
        process = await tg.start(partial(run_process, ["sleep", "30"]))
        tg.cancel_scope.cancel()
    assert process.returncode == -signal.SIGTERM
    check()


async def test_timeout_without_pidfd() -> None:
    with pytest.raises(subprocess.TimeoutExpired):
        await run_process(["sleep", "30"], timeout=0.1)
