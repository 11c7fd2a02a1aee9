"""run_process ends once its child exits, whatever the caller closes meanwhile.

``await tg.start(run_process, ...)`` hands the live :class:`Process` to the caller, who
may close any of its streams, or the process itself, at any moment. run_process must
then still return (or raise) once the child has exited, with the output it collected
before the close, and the caller's own ``aclose()`` must return too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest
from procio_process import Process, _waiting, open_process, run_process
from procio_process._posix import PosixProcess
from procio_process._streams import PipeSendStream

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]

# What the caller closes, in this order ("process" is Process.aclose()).
CLOSINGS = [
    ("stdout",),
    ("stderr",),
    ("stdin",),
    ("process",),
    ("stdout", "stderr", "stdin"),
    ("stdin", "stderr", "stdout"),
    ("stdout", "process"),
    ("process", "stdin"),
]


@pytest.fixture(params=["pidfd", "no pidfd"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run each test with pidfds, and with the fallback used where they are missing."""
    if request.param == "no pidfd":
        monkeypatch.setattr(_waiting, "_pidfd_usable", False)
    return str(request.param)


def _has_exited(pid: int) -> bool:
    # WNOWAIT: learn that the child exited without reaping it (run_process reaps it).
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except ChildProcessError:
        return True  # run_process got there first and reaped it
    return info is not None and info.si_pid == pid


def _block_until(condition: Callable[[], bool]) -> None:
    # Blocks the event loop on purpose: run_process gets no chance to read anything
    # before the caller's close, which is the case that used to hang.
    deadline = time.monotonic() + 20
    while not condition():
        assert time.monotonic() < deadline, "the child never got there"
        time.sleep(0.002)


async def _close(process: Process, what: str) -> None:
    if what == "process":
        await process.aclose()
        return
    stream = getattr(process, what)
    assert stream is not None
    await stream.aclose()


@pytest.mark.parametrize("feed", ["input", "stdin=PIPE"])
@pytest.mark.parametrize("when", ["before exit", "after exit"])
@pytest.mark.parametrize("closing", CLOSINGS, ids="+".join)
async def test_run_process_ends_whatever_the_caller_closes(
    closing: tuple[str, ...],
    when: str,
    feed: str,
    waiting: str,
    tmp_path: Path,
    leak_guard: StartGuard,
) -> None:
    check = leak_guard()
    marker = tmp_path / "written"
    if when == "before exit":
        # Runs until SIGUSR1; never reads its stdin.
        script = (
            "trap 'exit 5' USR1; echo out; echo err >&2; : > \"$1\"; while :; do sleep 0.01; done"
        )
    else:
        script = 'echo out; echo err >&2; : > "$1"; exit 5'
    # input= larger than a pipe keeps run_process's writer busy until the child ends.
    stdin_options = {"input": b"x" * 1_000_000} if feed == "input" else {"stdin": subprocess.PIPE}
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run(*, task_status: anyio.abc.TaskStatus[Process]) -> None:
        results.append(
            await run_process(
                ["sh", "-c", script, "sh", str(marker)],
                check=False,
                task_status=task_status,
                **stdin_options,
            )
        )

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            process: Process = await tg.start(run)
            _block_until(marker.exists)
            if when == "after exit":
                _block_until(lambda: _has_exited(process.pid))
            for what in closing:
                if what == "process" and when == "before exit":
                    # aclose() waits for the child: let it start waiting, then end the
                    # child, and see that aclose() returns.
                    tg.start_soon(_close, process, what)
                    for _ in range(10):
                        await anyio.lowlevel.checkpoint()
                else:
                    await _close(process, what)
            if when == "before exit":
                os.kill(process.pid, signal.SIGUSR1)

    [result] = results
    assert result.returncode == 5
    assert process.returncode == 5
    closed_outputs = {"stdout", "stderr"} & set(closing)
    if "process" in closing:
        closed_outputs = {"stdout", "stderr"}
    for name, expected in (("stdout", b"out\n"), ("stderr", b"err\n")):
        collected = getattr(result, name)
        if name in closed_outputs:
            # Closed before run_process could read it: what it holds is what it read.
            assert expected.startswith(collected)
        else:
            assert collected == expected
    assert process.stdin is not None
    with pytest.raises(anyio.ClosedResourceError):
        await process.stdin.send(b"x")
    for stream in (process.stdout, process.stderr):
        assert stream is not None
        with pytest.raises(anyio.ClosedResourceError):
            await stream.receive()
    check()


class _Wakeups:
    """Counts the wake-ups of run_process's poller (see the ``poller`` fixture)."""

    def __init__(self) -> None:
        self.count = 0

    async def while_idle(self, *, settle: int = 0) -> int:
        """Return how often the poller woke while this task took 200 checkpoints.

        *settle* checkpoints go first, uncounted, for what was still to be seen.
        """
        for _ in range(settle):
            await anyio.lowlevel.checkpoint()
        before = self.count
        for _ in range(200):
            await anyio.lowlevel.checkpoint()
        return self.count - before


@pytest.fixture
def poller(monkeypatch: pytest.MonkeyPatch) -> _Wakeups:
    """Count the wake-ups of run_process's poller, where it polls its pipes itself."""
    from procio_process import _communicate

    if not _communicate.AVAILABLE:
        pytest.skip("run_process polls its pipes itself only where epoll exists")
    wakeups = _Wakeups()
    real_wait_readable = anyio.wait_readable

    async def counting_wait_readable(fd: int) -> None:
        await real_wait_readable(fd)
        wakeups.count += 1

    monkeypatch.setattr(_communicate, "wait_readable", counting_wait_readable)
    return wakeups


async def test_stdin_duplicated_elsewhere_does_not_keep_run_process_awake(
    tmp_path: Path, poller: _Wakeups
) -> None:
    # A fork in another thread duplicates the parent's end of the stdin pipe: closing
    # it in run_process leaves the pipe open, and an epoll set that still watched it
    # would report it writable on every poll, waking run_process without end.
    marker = tmp_path / "read"
    payload = b"x" * 200_000
    script = (
        f"trap 'exit 5' USR1; head -c {len(payload)} >/dev/null; : > \"$1\"; "
        "while :; do sleep 0.01; done"
    )
    duplicate = -1
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run(*, task_status: anyio.abc.TaskStatus[Process]) -> None:
        results.append(
            await run_process(
                ["sh", "-c", script, "sh", str(marker)],
                input=payload,
                check=False,
                task_status=task_status,
            )
        )

    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                process: Process = await tg.start(run)
                assert isinstance(process.stdin, PipeSendStream)
                duplicate = os.dup(process.stdin.fileno())
                while not marker.exists():  # noqa: ASYNC110 - no event for a file
                    await anyio.sleep(0.01)
                # The whole input is written and stdin closed by now; the child runs
                # on. Give a spinning poller plenty of chances to show itself.
                spun = await poller.while_idle()
                os.kill(process.pid, signal.SIGUSR1)
    finally:
        if duplicate >= 0:
            os.close(duplicate)
    assert results[0].returncode == 5
    # At most a wake-up or two for the output the child had not yet closed.
    assert spun <= 2, f"run_process woke {spun} times with nothing to do"


async def test_outputs_at_end_of_file_do_not_keep_run_process_awake_while_the_child_runs(
    tmp_path: Path, poller: _Wakeups
) -> None:
    # The child writes, closes stdout and stderr, and runs on. run_process's poller
    # must stop watching the two pipes at end of file while it still waits for the
    # exit: an epoll set that kept them would report them readable (end of file) on
    # every poll, waking run_process without end.
    marker = tmp_path / "closed"
    script = (
        "trap 'exit 5' USR1; echo out; echo err >&2; exec >&- 2>&-; : > \"$1\"; "
        "while :; do sleep 0.01; done"
    )
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run(*, task_status: anyio.abc.TaskStatus[Process]) -> None:
        results.append(
            await run_process(
                ["sh", "-c", script, "sh", str(marker)], check=False, task_status=task_status
            )
        )

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            process: Process = await tg.start(run)
            while not marker.exists():  # noqa: ASYNC110 - no event for a file
                await anyio.sleep(0.01)
            # Both pipes are at end of file by now (perhaps not yet seen); the child
            # runs on. Give a spinning poller plenty of chances to show itself.
            spun = await poller.while_idle(settle=20)
            os.kill(process.pid, signal.SIGUSR1)
    assert results[0].returncode == 5
    assert (results[0].stdout, results[0].stderr) == (b"out\n", b"err\n")
    assert spun <= 2, f"run_process woke {spun} times with nothing to do"


async def test_a_grandchild_holding_the_outputs_does_not_keep_run_process_awake(
    tmp_path: Path, poller: _Wakeups
) -> None:
    # The child exits at once; a grandchild it leaves behind holds stdout and stderr
    # open, so run_process goes on waiting for their end of file (as subprocess.run
    # does). Meanwhile its poller must stop watching the child's pidfd, which stays
    # readable once the child has exited and would wake run_process without end.
    started, release = tmp_path / "started", tmp_path / "release"
    grandchild = 'while [ ! -e "$2" ]; do sleep 0.01; done; echo late'
    script = f'echo early; sh -c \'{grandchild}\' sh "$1" "$2" & : > "$1"; exit 3'
    results: list[subprocess.CompletedProcess[bytes]] = []

    async def run(*, task_status: anyio.abc.TaskStatus[Process]) -> None:
        results.append(
            await run_process(
                ["sh", "-c", script, "sh", str(started), str(release)],
                check=False,
                task_status=task_status,
            )
        )

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            process: Process = await tg.start(run)
            while process.returncode is None:  # noqa: ASYNC110 - reaped by run_process
                await anyio.sleep(0.01)
            spun = await poller.while_idle(settle=20)
            assert not results  # still waiting for the grandchild's end of file
            release.touch()
    assert results[0].returncode == 3
    assert results[0].stdout == b"early\nlate\n"
    assert spun <= 2, f"run_process woke {spun} times with nothing to do"


async def test_aclose_does_not_close_the_pidfd_under_a_waiting_task() -> None:
    # One task waits for the child (on its pidfd); another kills it and closes the
    # process. The waiting task must still learn the exit: an fd closed under a waiting
    # task is silently dropped by the event loop, and that task would never wake.
    results: list[int] = []
    process = await open_process(["sleep", "30"])

    async def waiter() -> None:
        results.append(await process.wait())

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()  # the waiter is waiting now
            process.kill()
            _block_until(lambda: _has_exited(process.pid))
            await process.aclose()
    assert results == [-signal.SIGKILL]
    assert isinstance(process, PosixProcess)
    assert process._exit_fd is None
