"""open_process and the Process handle: streams, waiting, signals, closing."""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from procio_process import DEVNULL, PIPE, STDOUT, CancelPolicy, Process, open_process
from procio_process._posix import PosixProcess

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]
PY = sys.executable


async def read_all(stream: anyio.abc.ByteReceiveStream | None) -> bytes:
    assert stream is not None
    chunks = [chunk async for chunk in stream]
    return b"".join(chunks)


async def test_process_is_an_anyio_process(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with await open_process([PY, "-c", "pass"]) as process:
        assert isinstance(process, anyio.abc.Process)
        assert isinstance(process, Process)
        assert isinstance(process.stdin, anyio.abc.ByteSendStream)
        assert isinstance(process.stdout, anyio.abc.ByteReceiveStream)
        assert isinstance(process.stderr, anyio.abc.ByteReceiveStream)
        assert process.pid > 0
    assert process.returncode == 0
    check()


async def test_stdin_to_stdout_round_trip(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with await open_process(["cat"]) as process:
        assert process.stdin is not None
        await process.stdin.send(b"hello ")
        await process.stdin.send(b"world")
        await process.stdin.aclose()
        assert await read_all(process.stdout) == b"hello world"
        assert await process.wait() == 0
    check()


async def test_str_command_runs_in_the_shell() -> None:
    async with await open_process("echo $((6 * 7)) | tr 4 x", stdin=None) as process:
        assert await read_all(process.stdout) == b"x2\n"


async def test_bytes_command_runs_in_the_shell() -> None:
    async with await open_process(b"echo bytes", stdin=None) as process:
        assert await read_all(process.stdout) == b"bytes\n"


async def test_sequence_command_is_not_shell_interpreted() -> None:
    async with await open_process(["echo", "$HOME", "a;b"], stdin=None) as process:
        assert await read_all(process.stdout) == b"$HOME a;b\n"


async def test_stderr_to_stdout_merges_the_streams() -> None:
    code = "import os; os.write(1, b'out '); os.write(2, b'err')"
    async with await open_process([PY, "-c", code], stderr=STDOUT, stdin=None) as process:
        assert process.stderr is None
        assert await read_all(process.stdout) == b"out err"


async def test_devnull_and_none_give_no_streams() -> None:
    async with await open_process(
        ["true"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=None
    ) as process:
        assert process.stdin is None
        assert process.stdout is None
        assert process.stderr is None
    assert process.returncode == 0


async def test_file_object_and_fd_as_streams(tmp_path: Path) -> None:
    out_path = tmp_path / "out"
    err_path = tmp_path / "err"
    err_fd = os.open(err_path, os.O_WRONLY | os.O_CREAT, 0o600)
    out_file = open_for_writing(out_path)
    try:
        code = "import os; os.write(1, b'to file'); os.write(2, b'to fd')"
        process = await open_process([PY, "-c", code], stdout=out_file, stderr=err_fd)
        async with process:
            assert process.stdout is None
    finally:
        os.close(err_fd)
        out_file.close()
    assert read_file(out_path) == b"to file"
    assert read_file(err_path) == b"to fd"


def open_for_writing(path: Path) -> BinaryIO:
    return path.open("wb")


def read_file(path: Path) -> bytes:
    return path.read_bytes()


async def test_wait_returns_the_exit_code_and_sets_returncode() -> None:
    async with await open_process([PY, "-c", "raise SystemExit(3)"]) as process:
        assert await process.wait() == 3
        assert process.returncode == 3
        # Waiting again returns the same code at once.
        assert await process.wait() == 3


async def test_returncode_is_none_while_running() -> None:
    async with await open_process(["sleep", "30"]) as process:
        assert process.returncode is None
        process.kill()
        assert await process.wait() == -signal.SIGKILL


async def test_concurrent_waiters_all_get_the_exit_code() -> None:
    results: list[int] = []
    async with await open_process(["sleep", "0.2"]) as process:

        async def waiter() -> None:
            results.append(await process.wait())

        async with anyio.create_task_group() as tg:
            for _ in range(5):
                tg.start_soon(waiter)
    assert results == [0] * 5


async def test_a_cancelled_waiter_does_not_strand_the_others() -> None:
    async with await open_process(["sleep", "30"]) as process:
        with anyio.move_on_after(0.05):
            await process.wait()
        assert process.returncode is None
        assert isinstance(process, PosixProcess)
        results: list[int] = []

        async def waiter() -> None:
            results.append(await process.wait())

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                # The first waiter watches the child's exit fd; the others wait on it.
                with anyio.CancelScope() as watcher_scope:
                    watcher = anyio.create_task_group()
                    async with watcher:
                        watcher.start_soon(waiter)
                        while not process._watching:  # until the watcher is in place
                            await anyio.lowlevel.checkpoint()
                        tg.start_soon(waiter)
                        tg.start_soon(waiter)
                        for _ in range(5):
                            await anyio.lowlevel.checkpoint()
                        # Cancel the watcher itself while the others wait.
                        watcher_scope.cancel()
                assert watcher_scope.cancelled_caught
                assert results == []
                process.kill()
    # One of the others took over watching and both got the exit code.
    assert results == [-signal.SIGKILL, -signal.SIGKILL]


async def test_terminate_kill_and_send_signal() -> None:
    async with await open_process(["sleep", "30"]) as process:
        process.terminate()
        assert await process.wait() == -signal.SIGTERM
    async with await open_process(["sleep", "30"]) as process:
        process.kill()
        assert await process.wait() == -signal.SIGKILL
    async with await open_process(["sleep", "30"]) as process:
        process.send_signal(signal.SIGINT)
        assert await process.wait() == -signal.SIGINT


async def test_signals_after_reaping_are_ignored() -> None:
    async with await open_process(["true"]) as process:
        await process.wait()
        # The pid may be recycled by now: nothing must be sent to it.
        process.terminate()
        process.kill()
        process.send_signal(signal.SIGUSR1)
    assert process.returncode == 0


async def test_receive_honours_max_bytes() -> None:
    async with await open_process([PY, "-c", "import os; os.write(1, b'x' * 100)"]) as process:
        assert process.stdout is not None
        await process.wait()
        assert await process.stdout.receive(10) == b"x" * 10
        assert await read_all(process.stdout) == b"x" * 90


async def test_end_of_stream_repeats() -> None:
    async with await open_process(["true"]) as process:
        assert process.stdout is not None
        with pytest.raises(anyio.EndOfStream):
            await process.stdout.receive()
        with pytest.raises(anyio.EndOfStream):
            await process.stdout.receive()


async def test_send_to_exited_child_is_broken_resource() -> None:
    async with await open_process(["true"]) as process:
        await process.wait()
        assert process.stdin is not None
        with pytest.raises(anyio.BrokenResourceError):
            await process.stdin.send(b"x" * 1_000_000)


async def test_large_output_and_input_flow_both_ways(leak_guard: StartGuard) -> None:
    check = leak_guard()
    payload = os.urandom(3_000_000)
    async with await open_process(["cat"]) as process:
        assert process.stdin is not None
        stdin = process.stdin
        received: list[bytes] = []

        async def feed() -> None:
            await stdin.send(payload)
            await stdin.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            received.append(await read_all(process.stdout))
    assert received[0] == payload
    check()


async def test_pipesize_sets_the_pipe_capacity() -> None:
    if not hasattr(__import__("fcntl"), "F_GETPIPE_SZ"):
        pytest.skip("F_GETPIPE_SZ is Linux only")
    import fcntl

    async with await open_process(["true"], pipesize=1 << 18) as process:
        assert process.stdout is not None
        fd = process.stdout.fileno()  # type: ignore[attr-defined]
        assert fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ) == 1 << 18


async def test_repr_names_pid_and_returncode() -> None:
    async with await open_process(["true"]) as process:
        await process.wait()
        assert repr(process) == f"<Process pid={process.pid} returncode=0>"


async def test_cancel_policy_and_signal_tree_are_visible() -> None:
    policy = CancelPolicy(grace_period=1)
    async with await open_process(["true"], cancel_policy=policy, signal_tree=True) as process:
        assert process.cancel_policy is policy
        assert process.signal_tree is True


def test_stream_constants_are_the_subprocess_ones() -> None:
    assert (PIPE, DEVNULL, STDOUT) == (subprocess.PIPE, subprocess.DEVNULL, subprocess.STDOUT)


async def test_a_dropped_process_does_not_leak_its_descriptors(leak_guard: StartGuard) -> None:
    check = leak_guard()
    process = await open_process(["true"])
    await process.wait()
    del process  # never closed
    gc.collect()
    check()


def test_closing_a_stream_outside_the_event_loop_closes_its_descriptor() -> None:
    process = anyio.run(open_process, ["true"])
    stdout = process.stdout
    assert stdout is not None
    fd = stdout.fileno()  # type: ignore[attr-defined]
    stdout.close()  # type: ignore[attr-defined]
    with pytest.raises(OSError):
        os.fstat(fd)
    anyio.run(process.aclose)


async def test_a_tight_reading_loop_is_cancellable_and_lets_others_run() -> None:
    from procio_process._streams import YIELD_EVERY

    events: list[str] = []

    async with await open_process(["yes"]) as process:  # output without pause
        stdout = process.stdout
        assert stdout is not None
        with anyio.CancelScope() as reading:

            async def ticker() -> None:
                while "read" not in events:
                    await anyio.lowlevel.checkpoint()
                for _ in range(200):
                    events.append("tick")
                    await anyio.lowlevel.checkpoint()
                reading.cancel()  # cancel the reader from outside, mid-loop

            async with anyio.create_task_group() as tg:
                tg.start_soon(ticker)
                with anyio.fail_after(20):
                    async for _ in stdout:
                        events.append("read")
        assert reading.cancelled_caught
        process.kill()
    # The promise: a task receiving data that is already there still lets the others
    # run, at least once every YIELD_EVERY receives (a receive that must wait for the
    # pipe yields anyway, and the count starts again after it: one turn of the reader
    # is at most YIELD_EVERY + 1 receives). Trio runs each ready task once per batch,
    # in random order, so two turns of the reader may meet across two batches.
    longest = max(len(run) for run in "".join(e[0] for e in events).split("t"))
    assert events.count("tick") == 200
    assert events.count("read") > 0
    assert longest <= 2 * (YIELD_EVERY + 1)
