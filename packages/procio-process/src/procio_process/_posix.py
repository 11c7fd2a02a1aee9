"""Starting a child here, without AnyIO: pipes, ``posix_spawn`` or ``Popen``, exit fd.

What :func:`~procio_process.open_process` and :func:`~procio_process.run_process` do
after their checkpoint on every platform but Windows (see ``_open``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

from . import _spawn
from ._fdstream import set_pipe_size
from ._options import DEVNULL, PIPE, STDOUT, StrOrBytesPath, check_arguments
from ._policy import CancelPolicy
from ._process import Process
from ._spawn import SpawnedChild
from ._streams import PipeReceiveStream, PipeSendStream
from ._waiting import open_exit_fd


def _make_pipe(pipesize: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    if pipesize > 0:
        # Failing is harmless: beyond /proc/sys/fs/pipe-max-size or the user's quota.
        set_pipe_size(write_fd, pipesize)
    return read_fd, write_fd


def start_posix(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    cwd: StrOrBytesPath | None,
    env: Mapping[str, str] | None,
    startupinfo: Any,
    creationflags: int,
    start_new_session: bool,
    pass_fds: Sequence[int],
    user: str | int | None,
    group: str | int | None,
    extra_groups: Iterable[str | int] | None,
    umask: int,
    cancel_policy: CancelPolicy,
    signal_tree: bool,
    **popen_kwargs: Any,
) -> Process:
    """Start the child without yielding: what :func:`open_process` does after its checkpoint.

    Nothing between the spawn and the return can be cancelled, so a started child always
    reaches its caller as a :class:`Process`.
    """
    args, shell = check_arguments(command, stdin, stdout, stderr, cancel_policy, popen_kwargs)
    pipesize = popen_kwargs.pop("pipesize", -1)
    if isinstance(pipesize, bool) or not isinstance(pipesize, int):
        raise TypeError(f"pipesize must be an int, not {type(pipesize).__name__}")

    if user is not None:
        popen_kwargs["user"] = user
    if group is not None:
        popen_kwargs["group"] = group
    if extra_groups is not None:
        popen_kwargs["extra_groups"] = extra_groups
    if umask >= 0:
        popen_kwargs["umask"] = umask
    if signal_tree:
        if sys.platform == "win32":
            raise ValueError("signal_tree=True needs POSIX process groups")
        process_group = popen_kwargs.get("process_group")
        if process_group not in (None, 0):
            raise ValueError(
                "signal_tree=True starts the child in a process group of its own; "
                f"it conflicts with process_group={process_group!r}"
            )
        if not start_new_session and process_group is None:
            if sys.version_info >= (3, 11):
                popen_kwargs["process_group"] = 0
            else:  # process_group= is new in 3.11; a new session is a new group too
                start_new_session = True

    # What Popen gets besides the command and the three streams.
    popen_options: dict[str, Any] = {
        "shell": shell,
        "cwd": cwd,
        "env": env,
        "startupinfo": startupinfo,
        "creationflags": creationflags,
        "start_new_session": start_new_session,
        "pass_fds": pass_fds,
        **popen_kwargs,
    }
    use_posix_spawn = _spawnable(args, (stdin, stdout, stderr), popen_options)
    parent_fds: list[int] = []
    child_fds: list[int] = []

    def pipe_for_child(spec: int | IO[Any] | None, *, child_reads: bool) -> int | IO[Any] | None:
        if spec != PIPE:
            return spec
        read_fd, write_fd = _make_pipe(pipesize)
        parent_fds.append(write_fd if child_reads else read_fd)
        child_fds.append(read_fd if child_reads else write_fd)
        return child_fds[-1]

    try:
        child_stdin = pipe_for_child(stdin, child_reads=True)
        stdin_fd = parent_fds[-1] if stdin == PIPE else None
        child_stdout = pipe_for_child(stdout, child_reads=False)
        stdout_fd = parent_fds[-1] if stdout == PIPE else None
        child_stderr = pipe_for_child(stderr, child_reads=False)
        stderr_fd = parent_fds[-1] if stderr == PIPE else None
        # Both return once the child has called exec (or failed to): they never wait
        # for the child to run, so they do not block the event loop for long.
        popen: subprocess.Popen[bytes] | SpawnedChild
        if use_posix_spawn and all(fd > 2 for fd in child_fds):
            popen = _spawn.spawn(
                args,
                shell=shell,
                env=env,
                streams=(child_stdin, child_stdout, child_stderr),  # type: ignore[arg-type]
                setsid=start_new_session,
                setpgroup=popen_kwargs.get("process_group"),
            )
        else:
            popen = subprocess.Popen(
                args, stdin=child_stdin, stdout=child_stdout, stderr=child_stderr, **popen_options
            )
        # Kills and reaps the child if it fails: a child nobody can wait for must go.
        exit_fd = open_exit_fd(popen)
    except BaseException:
        for fd in parent_fds:
            os.close(fd)
        raise
    finally:
        for fd in child_fds:
            os.close(fd)

    return Process(
        popen,
        None if stdin_fd is None else PipeSendStream(stdin_fd),
        None if stdout_fd is None else PipeReceiveStream(stdout_fd),
        None if stderr_fd is None else PipeReceiveStream(stderr_fd),
        exit_fd,
        cancel_policy,
        signal_tree,
    )


# The Popen options posix_spawn can honour; any other one sends the child through Popen.
_SPAWN_OPTIONS = {
    "shell",
    "cwd",
    "env",
    "startupinfo",
    "creationflags",
    "start_new_session",
    "pass_fds",
    "process_group",
}


def _spawnable(
    args: str | bytes | list[Any],
    streams: tuple[int | IO[Any] | None, ...],
    options: Mapping[str, Any],
) -> bool:
    """Whether :func:`_spawn.spawn` can start this child, or only ``Popen`` can.

    *options* are the keyword arguments ``Popen`` would get besides the streams; user,
    group, extra_groups and umask are among them when given.
    """
    if not _spawn.AVAILABLE or options.keys() - _SPAWN_OPTIONS:
        return False
    if options["cwd"] is not None or options["pass_fds"]:
        return False
    if options["startupinfo"] is not None or options["creationflags"]:
        return False
    process_group = options.get("process_group")
    if process_group is not None:
        if isinstance(process_group, bool) or not isinstance(process_group, int):
            return False  # Popen gives its own error
        if process_group < 0 or options["start_new_session"]:
            return False
    stdin, stdout, stderr = streams
    plain = (PIPE, DEVNULL, None)
    if stdin not in plain or stdout not in plain or stderr not in (*plain, STDOUT):
        return False
    if not options["shell"]:
        assert isinstance(args, list)
        program = os.fspath(args[0])
        # A name is looked up in this process's PATH: the child's only without env.
        if options["env"] is not None and not _spawn.has_directory(program):
            return False
    return True
