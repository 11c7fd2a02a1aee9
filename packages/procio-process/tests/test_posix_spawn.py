"""Children started directly (fork_exec or os.posix_spawn) instead of by Popen (Linux).

Most tests run once on each way of starting a child that this Python has, and expect
the same behaviour from all: that is the promise of the direct spawn path. Where a way
is not available, its runs are skipped and the others still run.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from procio_process import DEVNULL, PIPE, STDOUT, _spawn, open_process, run_process
from procio_process._posix import PosixProcess
from procio_process._spawn import SpawnedChild

pytestmark = pytest.mark.anyio

needs_posix_spawn = pytest.mark.skipif(
    not _spawn.AVAILABLE,
    reason="the direct spawn path needs Linux with CPython 3.11-3.13 or os.POSIX_SPAWN_CLOSEFROM",
)

PY = sys.executable
StartGuard = Callable[[], Callable[[], None]]


@pytest.fixture(
    params=[
        pytest.param(
            "fork_exec",
            marks=pytest.mark.skipif(
                _spawn._fork_exec is None, reason="fork_exec: CPython 3.11 to 3.13 on Linux"
            ),
        ),
        pytest.param(
            "posix_spawn",
            marks=pytest.mark.skipif(
                sys.platform != "linux" or _spawn._CLOSEFROM is None,
                reason="os.POSIX_SPAWN_CLOSEFROM (Python 3.13+ on Linux)",
            ),
        ),
        "Popen",
    ]
)
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with children started by each direct spawn method here, then by Popen."""
    if request.param == "Popen":
        monkeypatch.setattr(_spawn, "AVAILABLE", False)
    else:
        monkeypatch.setattr(_spawn, "METHOD", request.param)
        monkeypatch.setattr(_spawn, "AVAILABLE", True)
    return str(request.param)


def write_program(directory: Path, name: str, text: str, mode: int = 0o755) -> Path:
    program = directory / name
    program.write_text(text)
    program.chmod(mode)
    return program


def search_first(monkeypatch: pytest.MonkeyPatch, directory: Path) -> None:
    """Put *directory* at the head of this process's PATH."""
    monkeypatch.setenv("PATH", f"{directory}{os.pathsep}{os.environ['PATH']}")


def expected_handle(path: str) -> type:
    return subprocess.Popen if path == "Popen" else SpawnedChild


# -- which way a child is started ------------------------------------------------------


@pytest.mark.parametrize(
    ("command", "options"),
    [
        (["true"], {}),
        ("true", {}),
        (b"true", {}),
        ([b"/bin/true"], {"env": {"A": "1"}}),
        (["true"], {"stdin": DEVNULL, "stdout": DEVNULL, "stderr": STDOUT}),
        (["true"], {"stdin": None, "stdout": None, "stderr": None}),
        (["true"], {"start_new_session": True}),
        (["true"], {"signal_tree": True}),
        (["true"], {"process_group": 0}),
    ],
)
@needs_posix_spawn
async def test_plain_children_are_posix_spawned(
    command: object, options: dict[str, object]
) -> None:
    async with await open_process(command, **options) as process:  # type: ignore[arg-type]
        assert isinstance(process, PosixProcess)
        assert isinstance(process._popen, SpawnedChild)
        assert await process.wait() == 0


@pytest.mark.parametrize(
    "options",
    [
        {"cwd": "/"},
        {"pass_fds": (0,)},
        {"umask": 0o22},
        {"executable": "/bin/true"},
        {"close_fds": False},
        {"env": {"PATH": "/usr/bin:/bin"}},  # with a name to look up in that PATH
        {"stdout": 1},
        {"restore_signals": False},
    ],
)
async def test_options_only_popen_has_go_through_popen(options: dict[str, object]) -> None:
    async with await open_process(["true"], **options) as process:  # type: ignore[arg-type]
        assert isinstance(process, PosixProcess)
        assert isinstance(process._popen, subprocess.Popen)
        assert await process.wait() == 0


# -- the same behaviour both ways ----------------------------------------------------------


async def test_output_input_and_merge(path: str, leak_guard: StartGuard) -> None:
    check = leak_guard()
    result = await run_process(["sh", "-c", "cat; echo err >&2"], input=b"in\n")
    assert (result.stdout, result.stderr) == (b"in\n", b"err\n")
    merged = await run_process("echo out; echo err >&2", stderr=STDOUT)
    assert merged.stdout == b"out\nerr\n"
    assert vars(merged)["stderr"] is None
    empty = await run_process(["cat"], stdin=DEVNULL)
    assert empty.stdout == b""
    async with await open_process(["cat"], stdin=PIPE, stdout=PIPE, stderr=DEVNULL) as process:
        assert isinstance(process, PosixProcess)
        assert type(process._popen) is expected_handle(path)
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.send(b"echo")
        await process.stdin.aclose()
        assert await process.stdout.receive() == b"echo"
    check()


@pytest.mark.parametrize("name", ["no-such-program-here", "/no/such/program"])
async def test_missing_program_is_file_not_found(
    path: str, name: str, leak_guard: StartGuard
) -> None:
    check = leak_guard()
    with pytest.raises(FileNotFoundError) as caught:
        await run_process([name])
    assert caught.value.filename == name
    check()  # neither the pipes nor the child that failed to exec are left behind


async def test_file_that_is_not_a_program_is_an_exec_format_error(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_program(tmp_path, "no-interpreter-line", "echo this must not run\n")
    with pytest.raises(OSError) as caught:
        await run_process([script])
    assert caught.value.errno == errno.ENOEXEC
    # Found through PATH, it is not handed to the shell either.
    search_first(monkeypatch, tmp_path)
    with pytest.raises(OSError) as caught:
        await run_process([script.name])
    assert caught.value.errno == errno.ENOEXEC


async def test_file_without_execute_permission_is_permission_error(
    path: str, tmp_path: Path
) -> None:
    script = write_program(tmp_path, "not-executable", "#!/bin/sh\necho must not run\n", 0o644)
    with pytest.raises(PermissionError):
        await run_process([script])


async def test_name_is_looked_up_in_path(
    path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    script = write_program(tmp_path, "procio-test-program", "#!/bin/sh\necho found\n")
    search_first(monkeypatch, tmp_path)
    assert (await run_process([script.name])).stdout == b"found\n"


async def test_environment(path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PROCIO_TEST_VALUE", "inherited")
    inherited = await run_process("echo $PROCIO_TEST_VALUE")
    assert inherited.stdout == b"inherited\n"
    given = await run_process(["/bin/sh", "-c", "echo $A-$PROCIO_TEST_VALUE"], env={"A": "given"})
    assert given.stdout == b"given-\n"
    with pytest.raises(ValueError, match="environment variable"):
        await run_process(["/bin/true"], env={"A=B": "c"})


async def test_inheritable_descriptors_are_closed(path: str) -> None:
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)  # noqa: FBT003 - positional-only
    try:
        result = await run_process(["ls", "/proc/self/fd"])
        # ls's own listing: its three standard streams and the directory it reads.
        assert sorted(int(fd) for fd in result.stdout.split()) == [0, 1, 2, 3]
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_signals_python_ignores_are_restored(path: str) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    result = await run_process(["grep", "^SigIgn", "/proc/self/status"])
    ignored = int(result.stdout.split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig.name} is still ignored"


async def test_new_session_and_group(path: str) -> None:
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    session = await run_process([PY, "-c", code], start_new_session=True)
    assert session.stdout == b"True True\n"
    group = await run_process([PY, "-c", code], signal_tree=True)
    assert group.stdout == b"False True\n"
    plain = await run_process([PY, "-c", code])
    assert plain.stdout == b"False False\n"


async def test_signals_reach_the_child(path: str) -> None:
    async with await open_process(["sleep", "30"]) as process:
        process.terminate()
        assert await process.wait() == -signal.SIGTERM
        # Once reaped, the pid may belong to someone else: nothing is sent.
        process.kill()
        process.send_signal(signal.SIGKILL)


async def test_dropped_running_child_warns_and_is_reaped_later(
    path: str, list_children: Callable[[], dict[int, str]]
) -> None:
    held = [await open_process(["sleep", "0.2"], stdin=DEVNULL, stdout=DEVNULL, stderr=DEVNULL)]
    pid = held[0].pid
    with pytest.warns(ResourceWarning, match=f"subprocess {pid} is still running"):
        held.clear()  # the only reference: the handle goes at once
    deadline = time.monotonic() + 10
    while list_children().get(pid) != "Z":
        assert time.monotonic() < deadline, "the child did not exit"
        await anyio.sleep(0.02)
    # The next child started the same way reaps the zombie.
    await run_process(["true"])
    assert pid not in list_children()


# -- SpawnedChild on its own ---------------------------------------------------------------


@needs_posix_spawn
def test_spawned_child_poll_wait_and_reaped_elsewhere() -> None:
    child = _spawn.spawn(
        ["sh", "-c", "exit 7"],
        shell=False,
        env=None,
        streams=(None, None, None),
        setsid=False,
        setpgroup=None,
    )
    assert repr(child).startswith(f"<SpawnedChild pid={child.pid} ")
    assert child.wait() == 7
    assert child.poll() == 7
    other = _spawn.spawn(
        ["true"], shell=False, env=None, streams=(None, None, None), setsid=False, setpgroup=None
    )
    os.waitpid(other.pid, 0)  # someone else reaped it: its status is lost, as with Popen
    assert other.poll() == 0
    other.kill()  # and it is never signalled


@needs_posix_spawn
def test_dropped_children_are_reaped_safely_by_spawns_in_several_threads() -> None:
    # Dropped children are listed by __del__ (in any thread) and reaped by the next
    # spawn (in any thread): two spawns must not both take the same entry off the list.
    dropped = 64
    children = [
        _spawn.spawn(
            ["sleep", "30"],
            shell=False,
            env=None,
            streams=(None, None, None),
            setsid=False,
            setpgroup=None,
        )
        for _ in range(dropped)
    ]
    for child in children:
        os.kill(child.pid, signal.SIGKILL)
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # dead, not yet reaped
        # Seen as still running when dropped, so that __del__ lists it.
        child.poll = lambda: None  # type: ignore[method-assign]
    del child
    with pytest.warns(ResourceWarning):
        children.clear()
    assert len(_spawn._unreaped) >= dropped
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def spawn_one() -> None:
        try:
            barrier.wait()
            started = _spawn.spawn(
                ["true"],
                shell=False,
                env=None,
                streams=(None, None, None),
                setsid=False,
                setpgroup=None,
            )
            started.wait()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spawn_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert _spawn._unreaped == []
