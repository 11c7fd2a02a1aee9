"""The cancellation policy and signalling a whole process tree."""

from __future__ import annotations

import math
import os
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import anyio
import pytest
from procio_process import DEFAULT_GRACE_PERIOD, CancelPolicy, open_process, run_process

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
    marker = tmp_path / "ready"
    code = (
        "import pathlib, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        f"pathlib.Path({str(marker)!r}).touch(); time.sleep(30)"
    )
    policy = CancelPolicy(grace_period=0.3)
    with anyio.CancelScope() as scope:
        async with await open_process([PY, "-c", code], cancel_policy=policy) as process:
            await wait_until(marker.exists)
            started = time.monotonic()
            scope.cancel()
            await process.wait()
    assert process.returncode == -signal.SIGKILL
    assert time.monotonic() - started >= 0.3


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
