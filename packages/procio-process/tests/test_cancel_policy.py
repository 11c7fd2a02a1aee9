"""The cancellation policy and signalling a whole process tree."""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import pytest
from procio_process import DEFAULT_GRACE_PERIOD, CancelPolicy, open_process, run_process
from procio_process._posix import PosixProcess

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]
GroupMembers = Callable[[int], list[int]]
PY = sys.executable


async def wait_until(predicate: Callable[[], bool]) -> None:
    with anyio.fail_after(20):
        while not predicate():  # noqa: ASYNC110 - polls the OS, which has no event to await
            await anyio.sleep(0.01)


def test_default_policy_is_terminate_grace_kill() -> None:
    policy = CancelPolicy()
    assert policy.signal == signal.SIGTERM
    assert policy.grace_period == DEFAULT_GRACE_PERIOD == 5.0
    assert CancelPolicy.kill().grace_period == 0


@pytest.mark.parametrize("grace", [-1, math.nan])
def test_policy_rejects_a_bad_grace_period(grace: float) -> None:
    with pytest.raises(ValueError, match="grace_period"):
        CancelPolicy(grace_period=grace)


def test_policy_rejects_wrong_types() -> None:
    with pytest.raises(TypeError, match="grace_period"):
        CancelPolicy(grace_period="5")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="grace_period"):
        CancelPolicy(grace_period=True)
    with pytest.raises(TypeError, match="signal"):
        CancelPolicy(signal="SIGTERM")  # type: ignore[arg-type]


async def test_cancelling_a_shell_with_signal_tree_leaves_no_grandchild(
    leak_guard: StartGuard, group_members: GroupMembers
) -> None:
    check = leak_guard()
    async with anyio.create_task_group() as tg:
        process = await tg.start(
            partial(run_process, "sleep 30 & sleep 30; wait", signal_tree=True)
        )
        # The shell and both sleeps share the new group once they have started.
        await wait_until(lambda: len(group_members(process.pid)) == 3)
        tg.cancel_scope.cancel()
    assert process.returncode == -signal.SIGTERM
    assert group_members(process.pid) == []
    check()


async def test_signal_tree_kills_a_grandchild_that_ignores_sigterm(
    tmp_path: Path, group_members: GroupMembers
) -> None:
    marker = tmp_path / "ready"
    grandchild = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(30)"
    )
    # The leader exits on SIGTERM at once; the grandchild must be killed at the deadline.
    leader = f"import subprocess, time; subprocess.Popen([{PY!r}, '-c', {grandchild!r}])"
    command = [PY, "-c", leader + "; time.sleep(30)"]
    policy = CancelPolicy(grace_period=0.3)
    async with anyio.create_task_group() as tg:
        process = await tg.start(
            partial(run_process, command, signal_tree=True, cancel_policy=policy)
        )
        await wait_until(marker.exists)
        assert len(group_members(process.pid)) == 2
        tg.cancel_scope.cancel()
    assert group_members(process.pid) == []


async def test_signal_tree_methods_signal_the_whole_group(group_members: GroupMembers) -> None:
    process = await open_process("sleep 30 & sleep 30; wait", signal_tree=True)
    async with process:
        await wait_until(lambda: len(group_members(process.pid)) == 3)
        process.terminate()
        assert await process.wait() == -signal.SIGTERM
        await wait_until(lambda: group_members(process.pid) == [])


async def test_signal_tree_starts_a_new_process_group() -> None:
    code = "import os; print(os.getpgid(0) == os.getpid())"
    result = await run_process([PY, "-c", code], signal_tree=True)
    assert result.stdout == b"True\n"


async def test_signal_tree_with_a_foreign_process_group_is_refused() -> None:
    with pytest.raises(ValueError, match="process_group"):
        await open_process(["true"], signal_tree=True, process_group=os.getpgid(0))


async def test_cancelled_aclose_uses_the_policy_grace_then_kill(tmp_path: Path) -> None:
    marker, log = tmp_path / "ready", tmp_path / "signals"
    log.touch()
    code = (
        "import pathlib, signal, time\n"
        f"log = pathlib.Path({str(log)!r})\n"
        "def note(signum, frame):\n"
        "    with log.open('a') as f:\n"
        "        f.write(signal.Signals(signum).name + '\\n')\n"
        "signal.signal(signal.SIGTERM, note)\n"
        f"pathlib.Path({str(marker)!r}).touch()\n"
        "while True:\n"
        "    time.sleep(30)\n"
    )
    policy = CancelPolicy(grace_period=0.3)
    with anyio.CancelScope() as scope:
        async with await open_process([PY, "-c", code], cancel_policy=policy) as process:
            await wait_until(marker.exists)
            scope.cancel()
            await process.wait()
    # The policy's signal first, survived and noted; then SIGKILL ended the child.
    assert log.read_text() == "SIGTERM\n"
    assert process.returncode == -signal.SIGKILL


async def test_policy_signal_is_configurable() -> None:
    with anyio.move_on_after(0.1):
        async with await open_process(
            ["sleep", "30"], cancel_policy=CancelPolicy(signal=signal.SIGINT)
        ) as process:
            await process.wait()
    assert process.returncode == -signal.SIGINT


async def test_stop_applies_a_given_policy_and_returns_the_code() -> None:
    async with await open_process(["sleep", "30"]) as process:
        assert await process.stop(CancelPolicy.kill()) == -signal.SIGKILL
        assert process.returncode == -signal.SIGKILL


async def test_stop_on_an_exited_child_returns_its_code() -> None:
    async with await open_process(["true"]) as process:
        await process.wait()
        assert await process.stop() == 0


async def test_signal_tree_terminate_reaches_the_group_after_the_leader_is_reaped(
    group_members: GroupMembers,
) -> None:
    # The shell starts a background sleep in its group and exits at once; once the
    # shell is reaped, terminate() must still reach the sleep, which is in the group.
    async with await open_process(
        "sleep 30 & echo started", signal_tree=True, stdout=subprocess.PIPE
    ) as process:
        pgid = process.pid
        try:
            assert process.stdout is not None
            assert await process.stdout.receive() == b"started\n"
            assert await process.wait() == 0
            await wait_until(lambda: len(group_members(pgid)) == 1)
            process.terminate()
            await wait_until(lambda: group_members(pgid) == [])
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pgid, signal.SIGKILL)


async def test_signal_tree_never_signals_a_group_id_taken_by_a_new_process() -> None:
    # The leader and its group are gone; the same number is then in use by another
    # process (here faked: the id of a live process of ours). Its group is not ours.
    async with await open_process(["true"], signal_tree=True) as process:
        await process.wait()
    async with await open_process(["sleep", "30"], signal_tree=True) as other:
        assert isinstance(process, PosixProcess)
        process._popen.pid = other.pid  # as if the pid had been recycled
        process.terminate()
        process.kill()
        with anyio.move_on_after(0.2):
            await other.wait()
        assert other.returncode is None
        other.kill()


async def test_an_empty_group_is_not_searched_for_in_proc(monkeypatch: pytest.MonkeyPatch) -> None:
    # Reading every /proc/*/stat blocks the event loop; one killpg(pgid, 0) tells
    # first whether the group has any member at all.
    from procio_process import _process

    scans: list[int] = []
    real_scan = _process._linux_group_has_running_member

    def counting_scan(pgid: int) -> bool:
        scans.append(pgid)
        return real_scan(pgid)

    monkeypatch.setattr(_process, "_linux_group_has_running_member", counting_scan)
    async with await open_process(["true"], signal_tree=True) as process:
        assert await process.wait() == 0
        assert await process.stop() == 0
    assert scans == []
