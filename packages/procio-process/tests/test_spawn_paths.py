"""The two ways of starting a child without Popen, and run_process's path for its defaults.

``_spawn`` starts plain children with ``_posixsubprocess.fork_exec`` (CPython 3.11 to
3.13) or ``os.posix_spawn`` (3.13+ with closefrom); ``run_process(argv)`` with every
option at its default takes a path of its own (``_run._run_piped``) that keeps bare
descriptors and makes a ``Process`` only to stop a child it was cancelled over. Each
test here says what a bug in one of those would break.
"""

from __future__ import annotations

import errno
import os
import random
import signal
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from procio_process import (
    DEVNULL,
    PIPE,
    STDOUT,
    CancelPolicy,
    _communicate,
    _posix,
    _run,
    _spawn,
    open_process,
    run_process,
)
from procio_process._spawn import SpawnedChild

pytestmark = pytest.mark.anyio

PY = sys.executable
StartGuard = Callable[[], Callable[[], None]]

_METHODS = [
    pytest.param(
        "fork_exec",
        marks=pytest.mark.skipif(_spawn._fork_exec is None, reason="CPython 3.11 to 3.13 on Linux"),
    ),
    pytest.param(
        "posix_spawn",
        marks=pytest.mark.skipif(
            sys.platform != "linux" or _spawn._CLOSEFROM is None,
            reason="os.POSIX_SPAWN_CLOSEFROM (Python 3.13+ on Linux)",
        ),
    ),
]


@pytest.fixture(params=_METHODS)
def method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run the test with children started by each way _spawn has here."""
    monkeypatch.setattr(_spawn, "METHOD", request.param)
    monkeypatch.setattr(_spawn, "AVAILABLE", True)
    return str(request.param)


@pytest.fixture
def piped_starts(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Record the commands that run_process sends down its path for the defaults."""
    starts: list[object] = []
    real = _posix.start_piped

    def recording(command: list[Any]) -> object:
        starts.append(list(command))
        return real(command)

    monkeypatch.setattr(_run, "start_piped", recording)
    return starts


def write_program(directory: Path, name: str, text: str, mode: int = 0o755) -> Path:
    program = directory / name
    program.write_text(text)
    program.chmod(mode)
    return program


# -- errors reported by a child that could not exec -------------------------------------


@pytest.mark.parametrize("name", ["no-such-program-here", "/no/such/program"])
async def test_missing_program_both_paths(
    method: str, name: str, leak_guard: StartGuard, piped_starts: list[object]
) -> None:
    check = leak_guard()
    with pytest.raises(FileNotFoundError) as caught:
        await run_process([name])  # run_process's own path
    assert caught.value.filename == name
    assert caught.value.errno == errno.ENOENT
    with pytest.raises(FileNotFoundError) as caught:
        await open_process([name], stdin=DEVNULL)  # the general path, through _spawn
    assert caught.value.filename == name
    assert piped_starts == [[name]]
    check()  # no pipe, exit fd or unreaped child of the failed starts is left


async def test_exec_errors_keep_their_type(method: str, tmp_path: Path) -> None:
    no_interpreter = write_program(tmp_path, "no-interpreter-line", "echo must not run\n")
    with pytest.raises(OSError) as caught:
        await run_process([no_interpreter])
    assert caught.value.errno == errno.ENOEXEC
    assert caught.value.filename == str(no_interpreter)
    not_executable = write_program(tmp_path, "not-executable", "#!/bin/sh\n", 0o644)
    with pytest.raises(PermissionError):
        await run_process([not_executable])
    with pytest.raises(PermissionError):
        await run_process([tmp_path])  # a directory


def test_error_report_from_child_before_exec_has_no_filename() -> None:
    # What fork_exec's child writes when something other than the exec failed.
    pid = os.posix_spawn("/bin/true", ["/bin/true"], dict(os.environ))
    with pytest.raises(OSError) as caught:
        _spawn._raise_child_error(pid, b"OSError:d:noexec", "prog")
    assert type(caught.value) is PermissionError  # 0xd is EACCES
    assert caught.value.filename is None
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # it was reaped
    pid = os.posix_spawn("/bin/true", ["/bin/true"], dict(os.environ))
    with pytest.raises(subprocess.SubprocessError, match="went wrong"):
        _spawn._raise_child_error(pid, b"SubprocessError:0:went wrong", "prog")
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


# -- what the child gets -----------------------------------------------------------------


async def test_streams_and_environment(method: str, monkeypatch: pytest.MonkeyPatch) -> None:
    async with await open_process(["cat"], stdin=PIPE, stdout=PIPE, stderr=DEVNULL) as process:
        assert isinstance(process._popen, SpawnedChild)  # type: ignore[attr-defined]
        assert process.stdin is not None
        assert process.stdout is not None
        await process.stdin.send(b"through")
        await process.stdin.aclose()
        assert await process.stdout.receive() == b"through"
    merged = await run_process(["sh", "-c", "echo out; echo err >&2"], stderr=STDOUT)
    assert merged.stdout == b"out\nerr\n"
    empty_input = await run_process(["cat"], stdin=DEVNULL)
    assert empty_input.stdout == b""
    given = await run_process(["/bin/sh", "-c", "echo $A"], env={"A": "given"})
    assert given.stdout == b"given\n"
    monkeypatch.setenv("PROCIO_TEST_VALUE", "inherited")
    inherited = await run_process(["sh", "-c", "echo $PROCIO_TEST_VALUE"])
    assert inherited.stdout == b"inherited\n"
    with pytest.raises(ValueError, match="environment variable"):
        await run_process(["/bin/true"], env={"A=B": "c"})


async def test_stderr_to_inherited_stdout(method: str) -> None:
    # stderr=STDOUT with stdout inherited: the child's fd 2 is the parent's fd 1.
    async with await open_process(
        ["sleep", "30"], stdin=DEVNULL, stdout=None, stderr=STDOUT
    ) as process:
        try:
            assert os.readlink(f"/proc/{process.pid}/fd/2") == os.readlink("/proc/self/fd/1")
            assert os.readlink(f"/proc/{process.pid}/fd/0") == os.devnull
        finally:
            process.kill()


async def test_only_standard_streams_reach_the_child(method: str) -> None:
    read_fd, write_fd = os.pipe()
    os.set_inheritable(write_fd, True)  # noqa: FBT003 - positional-only
    try:
        for result in (
            await run_process(["ls", "/proc/self/fd"]),  # run_process's own path
            await run_process(["ls", "/proc/self/fd"], stdin=DEVNULL),  # through _spawn
        ):
            # ls's three standard streams and the directory it reads.
            assert sorted(int(fd) for fd in result.stdout.split()) == [0, 1, 2, 3]
    finally:
        os.close(read_fd)
        os.close(write_fd)


async def test_ignored_signals_are_restored(method: str) -> None:
    assert signal.getsignal(signal.SIGPIPE) == signal.SIG_IGN
    for result in (
        await run_process(["grep", "^SigIgn", "/proc/self/status"]),
        await run_process(["grep", "^SigIgn", "/proc/self/status"], stdin=DEVNULL),
    ):
        ignored = int(result.stdout.split()[1], 16)
        for sig in (signal.SIGPIPE, signal.SIGXFSZ):
            assert not ignored & (1 << (sig - 1)), f"{sig.name} is still ignored"


async def test_session_and_group(method: str) -> None:
    code = "import os; print(os.getsid(0) == os.getpid(), os.getpgid(0) == os.getpid())"
    session = await run_process([PY, "-c", code], start_new_session=True)
    assert session.stdout == b"True True\n"
    group = await run_process([PY, "-c", code], signal_tree=True)
    assert group.stdout == b"False True\n"
    plain = await run_process([PY, "-c", code])
    assert plain.stdout == b"False False\n"


def test_closed_standard_streams_in_the_parent(method: str, tmp_path: Path) -> None:
    # With the parent's fds 0 and 1 closed, new pipes land there: the error pipe's
    # write end must not be one the child is about to replace, and run_process must
    # not give the child its own pipe ends as standard streams.
    script = textwrap.dedent(
        f"""
        import os, sys
        sys.path[:0] = {sys.path!r}
        import anyio
        from procio_process import _spawn, run_process
        _spawn.METHOD = {method!r}
        report = os.open({str(tmp_path / "report")!r}, os.O_WRONLY | os.O_CREAT)
        os.close(0)
        os.close(1)
        lines = []
        try:
            _spawn.spawn(["/no/such/program"], shell=False, env=None,
                         streams=(None, None, None), setsid=False, setpgroup=None)
        except FileNotFoundError as exc:
            lines.append("missing:" + exc.filename)
        child = _spawn.spawn(["sh", "-c", "exit 5"], shell=False, env=None,
                             streams=(None, None, None), setsid=False, setpgroup=None)
        lines.append("exit:" + str(child.wait()))

        async def main():
            result = await run_process(["sh", "-c", "echo out; echo err >&2"])
            lines.append("run:" + repr((result.stdout, result.stderr)))

        anyio.run(main)
        os.write(report, "\\n".join(lines).encode())
        """
    )
    subprocess.run([PY, "-c", script], check=True, timeout=60)
    assert (tmp_path / "report").read_text().splitlines() == [
        "missing:/no/such/program",
        "exit:5",
        "run:(b'out\\n', b'err\\n')",
    ]


# -- run_process with its defaults --------------------------------------------------------


async def test_defaults_take_the_piped_path_and_options_do_not(
    piped_starts: list[object],
) -> None:
    assert (await run_process(["echo", "a"])).stdout == b"a\n"
    assert piped_starts == [["echo", "a"]]
    variants: list[tuple[Any, dict[str, Any]]] = [
        (("echo", "a"), {}),  # a tuple
        ("echo a", {}),  # the shell
        (["echo", "a"], {"stdin": DEVNULL}),
        (["echo", "a"], {"stderr": STDOUT}),
        (["echo", "a"], {"timeout": 30}),
        (["echo", "a"], {"env": dict(os.environ)}),
        (["echo", "a"], {"cwd": "/"}),
        (["echo", "a"], {"close_fds": True}),
        (["echo", "a"], {"signal_tree": True}),
    ]
    for command, options in variants:
        result = await run_process(command, **options)
        assert result.stdout == b"a\n", (command, options)
        assert result.args == command
    assert len(piped_starts) == 1
    # Any policy is accepted on the piped path; a wrong type is refused as before.
    await run_process(["true"], cancel_policy=CancelPolicy(grace_period=0))
    assert len(piped_starts) == 2
    with pytest.raises(TypeError, match="cancel_policy"):
        await run_process(["true"], cancel_policy="kill")  # type: ignore[arg-type]


async def test_bad_commands_on_the_piped_path(
    piped_starts: list[object], leak_guard: StartGuard
) -> None:
    check = leak_guard()
    with pytest.raises(ValueError, match="empty"):
        await run_process([])
    with pytest.raises(TypeError, match="every argument"):
        await run_process(["echo", 3])  # type: ignore[list-item]
    result = await run_process([Path("/bin/echo"), b"bytes", Path("path")])
    assert result.stdout == b"bytes path\n"
    assert len(piped_starts) == 3
    check()


async def test_large_output_on_both_pipes_at_once(leak_guard: StartGuard) -> None:
    # Far more than a pipe holds on each stream, interleaved: the parent must drain
    # both while the child runs, or the child blocks on a full pipe for ever.
    code = textwrap.dedent(
        """
        import os
        for i in range(64):
            os.write(1, bytes([65 + i % 26]) * 40000)
            os.write(2, bytes([97 + i % 26]) * 30000)
        """
    )
    check = leak_guard()
    with anyio.fail_after(30):
        result = await run_process([PY, "-c", code])
    expected_out = b"".join(bytes([65 + i % 26]) * 40000 for i in range(64))
    expected_err = b"".join(bytes([97 + i % 26]) * 30000 for i in range(64))
    assert result.stdout == expected_out
    assert result.stderr == expected_err
    check()


async def test_exit_code_and_check(leak_guard: StartGuard) -> None:
    check = leak_guard()
    command = ["sh", "-c", "echo out; echo err >&2; exit 3"]
    with pytest.raises(subprocess.CalledProcessError) as caught:
        await run_process(command)
    assert (caught.value.returncode, caught.value.cmd) == (3, command)
    assert (caught.value.stdout, caught.value.stderr) == (b"out\n", b"err\n")
    result = await run_process(command, check=False)
    assert (result.returncode, result.stdout, result.stderr) == (3, b"out\n", b"err\n")
    killed = await run_process(["sh", "-c", "kill -9 $$"], check=False)
    assert killed.returncode == -signal.SIGKILL
    check()


async def test_child_that_closes_its_output_early_is_still_waited_for(
    tmp_path: Path, leak_guard: StartGuard
) -> None:
    # End of file on both pipes long before the exit: the exit code must still be the
    # child's, so run_process waits for the exit too.
    check = leak_guard()
    marker = tmp_path / "marker"
    result = await run_process(
        ["sh", "-c", f"echo early; exec >&- 2>&-; sleep 0.3; touch {marker}; exit 4"],
        check=False,
    )
    assert (result.returncode, result.stdout) == (4, b"early\n")
    assert marker.exists()
    check()


async def test_grandchild_holding_the_pipe_is_read_to_the_end(leak_guard: StartGuard) -> None:
    # The child exits at once; a grandchild writes later through the inherited pipe.
    # Like subprocess.run, run_process returns what was written until end of file.
    check = leak_guard()
    result = await run_process(["sh", "-c", "(sleep 0.3; echo late) & echo now"])
    assert result.stdout == b"now\nlate\n"
    check()


TERM_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    path = sys.argv[1]
    def on_term(signum, frame):
        with open(path, "a") as f:
            f.write("term\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, on_term)
    if sys.argv[2] == "closed":
        # End of file on both pipes while this runs on: waited for on an exit fd.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
    with open(path, "a") as f:
        f.write("ready\\n")
    while True:
        time.sleep(0.01)
    """
)


def has_line(path: Path, line: str) -> bool:
    return path.exists() and line in path.read_text().splitlines()


async def wait_for_line(path: Path, line: str) -> None:
    with anyio.fail_after(20):
        # Written by the child: nothing to wait on but the file itself.
        while not has_line(path, line):  # noqa: ASYNC110
            await anyio.sleep(0.01)


@pytest.mark.parametrize("output", ["open", "closed"])
@pytest.mark.parametrize(
    ("policy", "expected"),
    [(CancelPolicy(), ["ready", "term"]), (CancelPolicy(grace_period=0), ["ready"])],
)
async def test_cancelled_run_stops_the_child_by_its_policy(
    tmp_path: Path,
    leak_guard: StartGuard,
    list_children: Callable[[], dict[int, str]],
    piped_starts: list[object],
    policy: CancelPolicy,
    expected: list[str],
    output: str,
) -> None:
    check = leak_guard()
    log = tmp_path / "log"
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:

            async def run() -> None:
                await run_process([PY, "-c", TERM_SCRIPT, str(log), output], cancel_policy=policy)

            tg.start_soon(run)
            await wait_for_line(log, "ready")
            children = list(list_children())
            tg.cancel_scope.cancel()
    assert len(piped_starts) == 1
    assert log.read_text().splitlines() == expected
    assert not set(children) & set(list_children())  # reaped, not a zombie
    check()


class Boom(Exception):
    pass


async def test_failure_while_waiting_stops_the_child_and_closes_everything(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    leak_guard: StartGuard,
    list_children: Callable[[], dict[int, str]],
) -> None:
    # Anything raised while the child runs (here by the wait, once the child is up)
    # must stop and reap the child, close every fd, and reach the caller unchanged.
    log = tmp_path / "log"
    real_wait = anyio.wait_readable  # what _communicate waits with

    async def failing_wait(fd: int) -> None:
        await real_wait(fd)
        if log.exists():
            raise Boom

    monkeypatch.setattr(_communicate, "wait_readable", failing_wait)
    check = leak_guard()
    before = set(list_children())
    code = (
        "import sys, time; open(sys.argv[1], 'w').close(); print('up', flush=True); time.sleep(30)"
    )
    with anyio.fail_after(30), pytest.raises(Boom):
        await run_process([PY, "-c", code, str(log)], cancel_policy=CancelPolicy(grace_period=0))
    assert set(list_children()) == before
    check()


async def test_cancelled_at_random_points_leaves_nothing_behind(
    leak_guard: StartGuard, list_children: Callable[[], dict[int, str]]
) -> None:
    check = leak_guard()
    before = set(list_children())
    rng = random.Random(1234)
    finished = cancelled = 0
    for _ in range(40):
        with anyio.move_on_after(rng.uniform(0, 0.004)) as scope:
            result = await run_process(["sh", "-c", "echo x"])
            assert result.stdout == b"x\n"
        if scope.cancelled_caught:
            cancelled += 1
        else:
            finished += 1
    assert cancelled > 0
    assert set(list_children()) == before
    check()


async def test_without_a_way_to_spawn_the_general_path_runs(
    monkeypatch: pytest.MonkeyPatch, piped_starts: list[object]
) -> None:
    monkeypatch.setattr(_spawn, "AVAILABLE", False)
    result = await run_process(["echo", "popen"])
    assert result.stdout == b"popen\n"
    assert piped_starts == [["echo", "popen"]]  # asked, and declined


async def test_many_at_once(leak_guard: StartGuard) -> None:
    check = leak_guard()
    results: list[bytes] = []

    async def one(index: int) -> None:
        results.append((await run_process(["echo", str(index)])).stdout)

    with anyio.fail_after(60):
        async with anyio.create_task_group() as tg:
            for index in range(64):
                tg.start_soon(one, index)
    assert sorted(results) == sorted(f"{index}\n".encode() for index in range(64))
    check()


@pytest.mark.parametrize("pidfds", ["pidfd", "waiter thread"])
async def test_running_out_of_fds_at_any_step_of_a_piped_run_leaves_nothing_behind(
    pidfds: str,
    monkeypatch: pytest.MonkeyPatch,
    leak_guard: StartGuard,
    list_children: Callable[[], dict[int, str]],
    piped_starts: list[object],
) -> None:
    # One more descriptor for each run than for the one before, so that EMFILE
    # strikes at every step of the piped path in turn (the pipes, the error pipe, the
    # exit fd, the poller): a clear OSError each time, and no child or fd left.
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
                result = await run_process(["sh", "-c", "echo out"])
            except OSError as exc:
                assert exc.errno == errno.EMFILE, exc
                outcomes.append("EMFILE")
            else:
                outcomes.append("ran")
                break
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert set(list_children()) == children_before
    assert outcomes.count("EMFILE") >= 4  # both pipes, the error pipe, the exit fd...
    assert outcomes[-1] == "ran"
    assert result.stdout == b"out\n"
    assert len(piped_starts) == len(outcomes) + 1
    check()
