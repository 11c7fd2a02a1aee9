"""run_process: AnyIO's semantics, the standard library's where AnyIO strays, and more."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import anyio.lowlevel
import pytest
from procio_process import CancelPolicy, Process, open_process, run_process

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]
PY = sys.executable


async def test_seed_example_shell_ps() -> None:
    result = await run_process("ps")
    assert result.returncode == 0
    assert b"PID" in result.stdout


async def test_seed_example_exec_ps() -> None:
    result = await run_process(["ps"])
    assert result.args == ["ps"]
    assert b"PID" in result.stdout


async def test_captures_stdout_and_stderr(leak_guard: StartGuard) -> None:
    check = leak_guard()
    code = "import sys; sys.stdout.write('out'); sys.stderr.write('err')"
    result = await run_process([PY, "-c", code])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"out", b"err")
    check()


async def test_input_is_written_then_closed() -> None:
    result = await run_process(["cat"], input=b"some input")
    assert result.stdout == b"some input"


async def test_empty_input_is_an_empty_pipe_not_the_parents_stdin() -> None:
    # AnyIO treats input=b"" as "no input" and lets the child read the parent's stdin.
    code = (
        "import os, stat, sys; st = os.fstat(0); "
        "print(stat.S_ISFIFO(st.st_mode), st.st_dev, st.st_ino, sys.stdin.buffer.read())"
    )
    result = await run_process([PY, "-c", code], input=b"")
    is_fifo, dev, ino, data = result.stdout.split()
    assert (is_fifo, data) == (b"True", b"b''")
    try:
        parent = os.fstat(0)
    except OSError:
        return  # the parent has no stdin to share
    assert (int(dev), int(ino)) != (parent.st_dev, parent.st_ino)


async def test_large_input_and_output_do_not_deadlock() -> None:
    payload = os.urandom(4 * 1024 * 1024)
    result = await run_process(["cat"], input=payload)
    assert result.stdout == payload


async def test_child_exiting_before_reading_its_input_is_a_plain_result() -> None:
    result = await run_process(["true"], input=b"x" * 2_000_000)
    assert result.returncode == 0


async def test_child_failing_before_reading_its_input_is_called_process_error() -> None:
    with pytest.raises(subprocess.CalledProcessError) as info:
        await run_process(["false"], input=b"x" * 2_000_000)
    assert info.value.returncode == 1


async def test_check_raises_called_process_error_with_output() -> None:
    code = "import sys; print('partial'); sys.stderr.write('oops'); sys.exit(4)"
    with pytest.raises(subprocess.CalledProcessError) as info:
        await run_process([PY, "-c", code])
    error = info.value
    assert error.returncode == 4
    assert error.cmd == [PY, "-c", code]
    assert error.stdout == b"partial\n"
    assert error.stderr == b"oops"


async def test_check_false_returns_the_failure() -> None:
    result = await run_process(["sh", "-c", "exit 9"], check=False)
    assert result.returncode == 9


async def test_stdout_none_inherits_and_collects_nothing() -> None:
    result = await run_process(["true"], stdout=None, stderr=subprocess.DEVNULL)
    # CompletedProcess[bytes] types both as bytes, though either may be None.
    assert vars(result)["stdout"] is None
    assert vars(result)["stderr"] is None


async def test_stderr_stdout_merges_into_stdout() -> None:
    code = "import os; os.write(1, b'a'); os.write(2, b'b')"
    result = await run_process([PY, "-c", code], stderr=subprocess.STDOUT)
    assert result.stdout == b"ab"
    assert vars(result)["stderr"] is None


async def test_stdin_from_a_file(tmp_path: Path) -> None:
    source = tmp_path / "in"
    source.write_bytes(b"from a file")
    with source.open("rb") as f:
        result = await run_process(["cat"], stdin=f)
    assert result.stdout == b"from a file"


async def test_cwd_and_env(tmp_path: Path) -> None:
    result = await run_process(
        [PY, "-c", "import os; print(os.getcwd(), os.environ['PROCIO_X'])"],
        cwd=tmp_path,
        env={**os.environ, "PROCIO_X": "42"},
    )
    assert result.stdout.split() == [str(tmp_path).encode(), b"42"]


async def test_start_new_session_makes_a_session_leader() -> None:
    code = "import os; print(os.getsid(0) == os.getpid())"
    result = await run_process([PY, "-c", code], start_new_session=True)
    assert result.stdout == b"True\n"


async def test_umask_is_applied() -> None:
    code = "import os; print(oct(os.umask(0)))"
    result = await run_process([PY, "-c", code], umask=0o027)
    assert result.stdout == b"0o27\n"


async def test_pass_fds_hands_a_descriptor_to_the_child() -> None:
    read_fd, write_fd = os.pipe()
    try:
        code = f"import os; os.write({write_fd}, b'through pass_fds')"
        await run_process([PY, "-c", code], pass_fds=[write_fd])
        assert os.read(read_fd, 100) == b"through pass_fds"
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_close_fds_false_passes_inheritable_descriptors() -> None:
    # The seed's to_process example relies on this Popen keyword passing through.
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)  # noqa: FBT003 - positional-only
    try:
        code = f"import os; os.write({write_fd}, b'inherited')"
        await run_process([PY, "-c", code], close_fds=False)
        assert os.read(read_fd, 100) == b"inherited"
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_inheritable_descriptor_is_closed_by_default() -> None:
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)  # noqa: FBT003 - positional-only
    try:
        code = f"import os; os.fstat({write_fd})"
        result = await run_process([PY, "-c", code], check=False)
        assert b"Bad file descriptor" in result.stderr
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_executable_keyword_replaces_argv0_program() -> None:
    result = await run_process(
        ["not-a-real-name", "-c", "import sys; print(sys.argv[0])"], executable=PY
    )
    assert result.stdout == b"-c\n"


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Popen(process_group=) is new in 3.11")
async def test_process_group_keyword_passes_through() -> None:
    code = "import os; print(os.getpgid(0) == os.getpid())"
    result = await run_process([PY, "-c", code], process_group=0)
    assert result.stdout == b"True\n"


async def test_path_command_runs_like_a_string(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho from a path\n")
    script.chmod(0o700)
    result = await run_process(script)
    assert result.stdout == b"from a path\n"


async def test_timeout_raises_timeout_expired_with_output_so_far(
    leak_guard: StartGuard,
) -> None:
    check = leak_guard()
    caught: list[subprocess.TimeoutExpired] = []

    async def run(*, task_status: anyio.abc.TaskStatus[Process]) -> None:
        with pytest.raises(subprocess.TimeoutExpired) as info:
            await run_process(
                "echo early; echo e >&2; exec sleep 30", timeout=0.5, task_status=task_status
            )
        caught.append(info.value)

    with anyio.fail_after(20):  # the sleep would run for 30 s
        async with anyio.create_task_group() as tg:
            process: Process = await tg.start(run)
    [error] = caught
    assert error.timeout == 0.5
    assert error.output == b"early\n"
    assert error.stderr == b"e\n"
    # The timeout stopped the child by the default policy's first signal.
    assert process.returncode == -signal.SIGTERM
    check()


async def test_timeout_not_reached_returns_normally() -> None:
    result = await run_process(["echo", "quick"], timeout=30)
    assert result.stdout == b"quick\n"


async def test_timeout_keeps_output_written_during_the_grace_period() -> None:
    # The shell runs its trap once the current short sleep is over.
    command = "trap 'echo goodbye; exit 0' TERM; echo ready; while :; do sleep 0.05; done"
    with pytest.raises(subprocess.TimeoutExpired) as info:
        await run_process(command, timeout=0.5)
    assert info.value.output == b"ready\ngoodbye\n"


async def test_task_group_start_hands_back_the_live_process(leak_guard: StartGuard) -> None:
    check = leak_guard()
    async with anyio.create_task_group() as tg:
        process = await tg.start(partial(run_process, ["cat"], stdin=subprocess.PIPE))
        assert isinstance(process, Process)
        assert process.returncode is None
        assert process.stdin is not None
        await process.stdin.send(b"bye")
        await process.stdin.aclose()
    assert process.returncode == 0
    check()


async def test_run_process_in_a_cancelled_scope_starts_no_child(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # run_process checks for cancellation before it spawns anything: a call made in a
    # cancelled scope must not start a child only to stop it again.
    from procio_process import _posix, _run

    starts: list[object] = []
    real_start = _posix.start_posix

    def recording_start(*args: Any, **kwargs: Any) -> _posix.PosixProcess:
        starts.append(args[0])
        return real_start(*args, **kwargs)

    real_start_piped = _posix.start_piped

    def recording_start_piped(command: list[Any]) -> object:
        starts.append(command)
        return real_start_piped(command)

    monkeypatch.setattr(_run, "start_posix", recording_start)
    monkeypatch.setattr(_posix, "start_posix", recording_start)
    monkeypatch.setattr(_run, "start_piped", recording_start_piped)
    with anyio.fail_after(20):
        with anyio.CancelScope() as scope:
            scope.cancel()
            await run_process(["true"])
        assert scope.cancelled_caught
        assert starts == []
        await run_process(["true"])  # the recorder does see a start
    assert starts == [["true"]]


async def test_cancelled_run_reaps_the_child_and_closes_everything(
    leak_guard: StartGuard,
) -> None:
    check = leak_guard()
    async with anyio.create_task_group() as tg:
        process = await tg.start(run_process, ["sleep", "30"])
        tg.cancel_scope.cancel()
    assert process.returncode == -15
    assert process.stdout is not None
    with pytest.raises(anyio.ClosedResourceError):
        await process.stdout.receive()
    check()


def survive_sigterm_code(marker: Path, log: Path) -> str:
    """A child that notes each SIGTERM in *log* and lives on; *marker* says it is ready."""
    return (
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


async def wait_for_file(path: Path) -> None:
    exists = path.exists
    with anyio.fail_after(20):
        while not exists():  # noqa: ASYNC110 - polls the file system, which has no event
            await anyio.sleep(0.01)


async def test_cancellation_escalates_to_kill_after_the_grace_period(tmp_path: Path) -> None:
    marker, log = tmp_path / "ready", tmp_path / "signals"
    log.touch()
    policy = CancelPolicy(grace_period=0.3)
    async with anyio.create_task_group() as tg:
        process = await tg.start(
            partial(
                run_process, [PY, "-c", survive_sigterm_code(marker, log)], cancel_policy=policy
            )
        )
        await wait_for_file(marker)
        tg.cancel_scope.cancel()
    # SIGTERM came first and was survived (noted once); SIGKILL ended the child.
    assert log.read_text() == "SIGTERM\n"
    assert process.returncode == -signal.SIGKILL


async def test_kill_policy_kills_at_once(tmp_path: Path) -> None:
    marker, log = tmp_path / "ready", tmp_path / "signals"
    log.touch()
    async with anyio.create_task_group() as tg:
        process = await tg.start(
            partial(
                run_process,
                [PY, "-c", survive_sigterm_code(marker, log)],
                cancel_policy=CancelPolicy.kill(),
            )
        )
        await wait_for_file(marker)
        tg.cancel_scope.cancel()
    # No SIGTERM at all: SIGKILL straight away.
    assert log.read_text() == ""
    assert process.returncode == -signal.SIGKILL


async def test_open_process_is_usable_after_run_process_in_same_loop() -> None:
    await run_process(["true"])
    async with await open_process(["true"]) as process:
        await process.wait()
    assert process.returncode == 0


async def test_seed_example_open_process_and_iterate() -> None:
    chunks = []
    async with await open_process(["ps"]) as process:
        assert process.stdout is not None
        async for chunk in process.stdout:
            chunks.append(chunk)
    assert b"PID" in b"".join(chunks)
    assert process.returncode == 0


async def test_run_process_leaves_room_for_other_tasks() -> None:
    payload = b"x" * 20_000_000
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    async with anyio.create_task_group() as tg:
        tg.start_soon(ticker)
        result = await run_process(["cat"], input=payload)
        tg.cancel_scope.cancel()
    assert result.stdout == payload
    # The promise (every await is a schedule point, and a task moving data that is
    # already there still lets others run): hundreds of pipe-fulls went through, so
    # the other task must have run many times meanwhile, not once or twice at the end.
    assert ticks > 20


async def test_child_closing_its_output_early_does_not_hold_the_event_loop(
    tmp_path: Path,
) -> None:
    # Once the output pipes reach end of file, run_process polls briefly for the exit
    # that usually follows at once. A child that closes its output and then runs on
    # must still be waited for through the event loop: here it exits only once another
    # task has run, which that task cannot do while run_process holds the event loop.
    go = tmp_path / "go"
    closed = tmp_path / "closed"
    script = 'exec >&- 2>&-; : > "$1"; while [ ! -e "$2" ]; do sleep 0.01; done; exit 4'

    async def other_task() -> None:
        await wait_for_file(closed)
        go.touch()

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            result = await run_process(
                ["sh", "-c", script, "sh", str(closed), str(go)], check=False
            )
    assert result.returncode == 4
    assert result.stdout == result.stderr == b""


async def test_a_child_reaped_before_its_pidfd_is_opened_is_still_waited_for(
    monkeypatch: pytest.MonkeyPatch, leak_guard: StartGuard
) -> None:
    # With SIGCHLD ignored the kernel reaps children at once, and pidfd_open() may
    # find the child gone (ESRCH). Waiting must still end, with nothing left behind.
    from procio_process import _waiting

    def gone(pid: int) -> int:
        raise ProcessLookupError(errno.ESRCH, "No such process")

    monkeypatch.setattr(os, "pidfd_open", gone, raising=False)
    monkeypatch.setattr(_waiting, "_pidfd_usable", True)
    check = leak_guard()
    previous = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        with anyio.fail_after(20):
            result = await run_process(["sh", "-c", "echo out"])
    finally:
        signal.signal(signal.SIGCHLD, previous)
    assert result.stdout == b"out\n"
    assert result.returncode == 0  # the real status is lost, as with subprocess
    assert _waiting._pidfd_usable  # one vanished child says nothing about the system
    check()


@pytest.mark.parametrize("pidfds", ["pidfd", "waiter thread"])
async def test_running_out_of_fds_at_any_step_of_a_run_leaves_nothing_behind(
    pidfds: str,
    monkeypatch: pytest.MonkeyPatch,
    leak_guard: StartGuard,
    list_children: Callable[[], dict[int, str]],
) -> None:
    # Each run gets one more descriptor to work with than the one before, so that
    # EMFILE strikes at every step in turn: the pipes, the spawn, the exit fd, the
    # poller. Each failure must be a clear OSError that leaves no child and no fd.
    resource = pytest.importorskip("resource")
    from procio_process import _waiting

    if pidfds == "waiter thread":
        monkeypatch.setattr(_waiting, "_pidfd_usable", False)
    await run_process(["true"])  # the event loop's own descriptors exist by now
    check = leak_guard()
    children_before = set(list_children())
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    base = max(int(fd) for fd in os.listdir("/proc/self/fd")) + 1
    outcomes: list[str] = []
    with anyio.fail_after(30):
        for extra in range(40):
            resource.setrlimit(resource.RLIMIT_NOFILE, (base + extra, hard))
            try:
                result = await run_process(["sh", "-c", "echo out"], input=b"in")
            except OSError as exc:
                assert exc.errno == errno.EMFILE, exc
                outcomes.append("EMFILE")
            else:
                outcomes.append("ran")
                break
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert set(list_children()) == children_before
    assert outcomes[0] == "EMFILE"
    assert outcomes[-1] == "ran"
    assert result.stdout == b"out\n"
    check()
