"""Children started through anyio.open_process: how procio runs on Windows.

The tests switch delegation on, so that this platform runs the code Windows runs:
AnyIO starts the child and drives its streams, and procio adds its cancellation policy,
timeout and task_status on top.
"""

from __future__ import annotations

import gc
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from procio_process import STDOUT, CancelPolicy, Process, _open, open_process, run_process
from procio_process._delegated import DelegatedProcess

pytestmark = pytest.mark.anyio

PY = sys.executable
StartGuard = Callable[[], Callable[[], None]]
LeakCheck = Callable[[], Awaitable[Callable[[], Awaitable[None]]]]


@pytest.fixture(autouse=True)
def delegated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_open, "DELEGATE", True)


@pytest.fixture
def leak_check(leak_guard: StartGuard) -> LeakCheck:
    """Like leak_guard, allowing for two habits of uvloop's own subprocess support.

    Once it has started a child, uvloop keeps a /dev/null descriptor open for the
    loop's lifetime, so one child runs before the snapshot. After a failed spawn, its
    descriptors live in reference cycles until the garbage collector runs, so it runs
    before the comparison.
    """

    async def start() -> Callable[[], Awaitable[None]]:
        await run_process(["true"])
        check = leak_guard()

        async def collect_then_check() -> None:
            gc.collect()
            await anyio.sleep(0.05)  # uvloop closes the collected transports' sockets
            check()

        return collect_then_check

    return start


async def test_open_process_gives_a_process_over_anyio_streams(leak_check: LeakCheck) -> None:
    check = await leak_check()
    async with await open_process(["cat"]) as process:
        assert isinstance(process, DelegatedProcess)
        assert isinstance(process, Process)
        assert repr(process) == f"<DelegatedProcess pid={process.pid} returncode=None>"
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.send(b"hello")
        await process.stdin.aclose()
        assert await process.stdout.receive() == b"hello"
    assert process.returncode == 0
    await check()


async def test_run_process_output_input_and_errors(leak_check: LeakCheck) -> None:
    check = await leak_check()
    result = await run_process(["sh", "-c", "cat; echo err >&2"], input=b"in\n")
    assert (result.stdout, result.stderr) == (b"in\n", b"err\n")
    merged = await run_process("echo out; echo err >&2", stderr=STDOUT)
    assert merged.stdout == b"out\nerr\n"
    with pytest.raises(subprocess.CalledProcessError) as caught:
        await run_process("echo lost; exit 3")
    assert caught.value.returncode == 3
    assert caught.value.stdout == b"lost\n"
    with pytest.raises(FileNotFoundError):
        await run_process(["no-such-program-here"])
    await check()


async def test_timeout_stops_the_child_and_keeps_its_output(leak_check: LeakCheck) -> None:
    check = await leak_check()
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        await run_process(
            [PY, "-u", "-c", "print('started'); import time; time.sleep(30)"],
            timeout=1,
            cancel_policy=CancelPolicy(grace_period=0),
        )
    assert caught.value.output == b"started\n"
    await check()


async def test_cancellation_follows_the_policy(tmp_path: Path, leak_check: LeakCheck) -> None:
    check = await leak_check()
    marker = tmp_path / "terminated"
    code = (
        "import signal, sys, time\n"
        f"def on_term(*_): open({str(marker)!r}, 'w').close(); sys.exit(7)\n"
        "signal.signal(signal.SIGTERM, on_term)\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)\n"
    )
    async with anyio.create_task_group() as tg:
        process = await tg.start(run_process, [PY, "-c", code])
        assert isinstance(process, DelegatedProcess)
        assert process.stdout is None or process.returncode is None
        await anyio.sleep(0.5)  # let the child install its handler
        tg.cancel_scope.cancel()
    assert marker.exists()  # asked politely first
    assert process.returncode == 7
    await check()


async def test_child_ignoring_terminate_is_killed_after_the_grace_period() -> None:
    code = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(30)"
    async with await open_process([PY, "-c", code]) as process:
        await anyio.sleep(0.5)
        assert await process.stop(CancelPolicy(grace_period=0.2)) == -signal.SIGKILL


async def test_cancelled_aclose_stops_the_child() -> None:
    process = await open_process(["sleep", "30"], cancel_policy=CancelPolicy(grace_period=1))
    with anyio.move_on_after(0.2):
        await process.aclose()
    assert process.returncode == -signal.SIGTERM
    process.kill()  # nothing is sent to an exited child
    process.terminate()
    process.send_signal(signal.SIGTERM)


async def test_options_anyio_does_not_take_are_refused() -> None:
    with pytest.raises(TypeError, match=r"close_fds=.*anyio\.open_process"):
        await open_process(["true"], close_fds=False)
    with pytest.raises(ValueError, match="POSIX process groups"):
        await run_process(["true"], signal_tree=True)
    # The checks every platform makes still come first.
    with pytest.raises(TypeError, match="shell"):
        await open_process(["true"], shell=True)
    with pytest.raises(ValueError, match="empty"):
        await run_process([])
