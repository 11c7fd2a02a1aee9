"""Each behaviour AnyIO had to fix in its own subprocess support, proved on procio."""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable

import anyio
import pytest
from procio_process import open_process

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]
PY = sys.executable


async def test_wait_returns_while_a_grandchild_holds_the_pipes(leak_guard: StartGuard) -> None:
    check = leak_guard()
    # The shell exits at once; its background sleep keeps stdout and stderr open.
    process = await open_process("sleep 20 & echo started", start_new_session=True)
    try:
        with anyio.fail_after(10):
            assert await process.wait() == 0
            assert process.stdout is not None
            assert await process.stdout.receive() == b"started\n"
            # Leaving the handle with the grandchild still holding the pipes is fine too.
            await process.aclose()
    finally:
        os.killpg(process.pid, signal.SIGKILL)
    check()


async def test_aclose_does_not_deadlock_on_a_child_blocked_writing(
    leak_guard: StartGuard,
) -> None:
    check = leak_guard()
    with anyio.fail_after(20):
        async with await open_process(["yes"]) as process:  # writes until it fails
            assert process.stdout is not None
            await process.stdout.receive(1)  # the child runs and fills the pipe
    # Closing the read end made the child's next write raise SIGPIPE.
    assert process.returncode == -signal.SIGPIPE
    check()


async def test_leaving_async_with_with_unread_output_is_fine(leak_guard: StartGuard) -> None:
    check = leak_guard()
    code = "import sys; print('unread'); sys.stderr.write('also unread')"
    async with await open_process([PY, "-c", code]) as process:
        await process.wait()
    assert process.returncode == 0
    check()


async def test_closing_stdout_from_another_task_wakes_a_pending_receive() -> None:
    async with await open_process(["sleep", "30"]) as process:
        stdout = process.stdout
        assert stdout is not None
        outcome: list[BaseException] = []

        async def receiver() -> None:
            try:
                await stdout.receive()
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(receiver)
                await anyio.wait_all_tasks_blocked()
                await stdout.aclose()
        assert len(outcome) == 1
        process.kill()


async def test_closing_stdin_from_another_task_wakes_a_pending_send() -> None:
    async with await open_process(["sleep", "30"]) as process:
        stdin = process.stdin
        assert stdin is not None
        outcome: list[BaseException] = []

        async def sender() -> None:
            try:
                await stdin.send(b"x" * 10_000_000)  # far more than a pipe holds
            except anyio.ClosedResourceError as exc:
                outcome.append(exc)

        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(sender)
                await anyio.wait_all_tasks_blocked()
                await stdin.aclose()
        assert len(outcome) == 1
        process.kill()


async def test_after_cancellation_returncode_is_set_and_streams_are_closed(
    leak_guard: StartGuard,
) -> None:
    check = leak_guard()
    with anyio.move_on_after(0.2) as scope:
        async with await open_process(["sleep", "30"]) as process:
            await process.wait()
    assert scope.cancelled_caught
    assert process.returncode == -signal.SIGTERM
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    with pytest.raises(anyio.ClosedResourceError):
        await process.stdin.send(b"x")
    with pytest.raises(anyio.ClosedResourceError):
        await process.stdout.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await process.stderr.receive()
    check()


async def test_receive_zero_raises_value_error() -> None:
    async with await open_process(["true"]) as process:
        assert process.stdout is not None
        with pytest.raises(ValueError, match="max_bytes"):
            await process.stdout.receive(0)
        with pytest.raises(ValueError, match="max_bytes"):
            await process.stdout.receive(-1)


async def test_aclose_twice_is_harmless() -> None:
    process = await open_process(["true"])
    await process.aclose()
    await process.aclose()
    assert process.returncode == 0
