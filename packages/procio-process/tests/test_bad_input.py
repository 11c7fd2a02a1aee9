"""Bad input: the error subprocess would give, or a clear TypeError/ValueError; no leak."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from procio_process import STDOUT, CancelPolicy, open_process, run_process

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]


async def test_missing_executable_is_file_not_found(leak_guard: StartGuard) -> None:
    check = leak_guard()
    with pytest.raises(FileNotFoundError):
        await open_process(["/no/such/program"])
    with pytest.raises(FileNotFoundError):
        await run_process(["no-such-program-procio"])
    check()


async def test_missing_cwd_is_file_not_found(leak_guard: StartGuard) -> None:
    check = leak_guard()
    with pytest.raises(FileNotFoundError):
        await run_process(["true"], cwd="/no/such/directory")
    check()


async def test_shell_reports_a_missing_command_by_exit_code() -> None:
    result = await run_process("no-such-program-procio", check=False)
    assert result.returncode == 127


@pytest.mark.parametrize(
    ("command", "error", "message"),
    [
        (42, TypeError, "command must be"),
        (None, TypeError, "command must be"),
        (bytearray(b"ls"), TypeError, "command must be"),
        (["ls", 3], TypeError, "every argument"),
        ([], ValueError, "empty"),
        ("", ValueError, "empty"),
    ],
)
async def test_bad_commands(
    command: Any, error: type[Exception], message: str, leak_guard: StartGuard
) -> None:
    check = leak_guard()
    with pytest.raises(error, match=message):
        await open_process(command)
    check()


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"stdin": True}, TypeError, "not a bool"),
        ({"stdout": "out.txt"}, TypeError, "fileno"),
        ({"stdout": STDOUT}, ValueError, "only valid for stderr"),
        ({"stdin": -7}, ValueError, "file descriptor"),
        ({"text": True}, TypeError, "bytes"),
        ({"encoding": "utf-8"}, TypeError, "bytes"),
        ({"shell": True}, TypeError, "shell"),
        ({"bufsize": 0}, TypeError, "unbuffered"),
        ({"cancel_policy": 5}, TypeError, "CancelPolicy"),
        ({"pipesize": "big"}, TypeError, "pipesize"),
        ({"no_such_option": 1}, TypeError, "no_such_option"),
        ({"startupinfo": object()}, ValueError, "Windows"),
    ],
)
async def test_bad_options(
    kwargs: dict[str, Any], error: type[Exception], message: str, leak_guard: StartGuard
) -> None:
    check = leak_guard()
    with pytest.raises(error, match=message):
        await open_process(["true"], **kwargs)
    check()


async def test_input_and_stdin_together_are_refused() -> None:
    with pytest.raises(ValueError, match="stdin and input"):
        await run_process(["cat"], input=b"x", stdin=subprocess.DEVNULL)


async def test_text_input_is_refused_with_a_hint() -> None:
    with pytest.raises(TypeError, match="encode"):
        await run_process(["cat"], input="text")  # type: ignore[arg-type]


@pytest.mark.parametrize(("timeout", "error"), [("1", TypeError), (float("nan"), ValueError)])
async def test_bad_timeout(timeout: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="timeout"):
        await run_process(["true"], timeout=timeout)


async def test_a_bad_policy_is_refused_when_built() -> None:
    with pytest.raises(ValueError, match="grace_period"):
        await run_process(["true"], cancel_policy=CancelPolicy(grace_period=-1))


async def test_permission_denied_is_permission_error(
    tmp_path: Path, leak_guard: StartGuard
) -> None:
    check = leak_guard()
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o600)
    with pytest.raises(PermissionError):
        await run_process([str(script)])
    check()


@pytest.mark.skipif(sys.platform == "win32", reason="user= is POSIX only")
async def test_unknown_user_is_refused(leak_guard: StartGuard) -> None:
    check = leak_guard()
    with pytest.raises(KeyError):
        await run_process(["true"], user="no-such-user-procio")
    check()


async def test_text_options_pass_when_no_stream_is_a_pipe() -> None:
    # They change nothing without pipes, so a caller forwarding every Popen option
    # (a worker pool, say) is not refused.
    process = await open_process(
        ["true"], stdin=subprocess.DEVNULL, stdout=None, stderr=None, text=True, bufsize=0
    )
    async with process:
        assert await process.wait() == 0
