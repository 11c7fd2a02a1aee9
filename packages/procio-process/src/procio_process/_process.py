"""The :class:`Process` handle and :func:`open_process`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from os import PathLike
from signal import Signals
from typing import IO, Any, TypeAlias

import anyio
import anyio.abc
from anyio import CancelScope, move_on_after
from anyio.lowlevel import checkpoint

from . import _spawn
from ._policy import CancelPolicy
from ._spawn import SpawnedChild
from ._streams import PipeReceiveStream, PipeSendStream
from ._waiting import open_exit_fd, wait_for_exit

StrOrBytesPath: TypeAlias = "str | bytes | PathLike[str] | PathLike[bytes]"

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

_DEFAULT_POLICY = CancelPolicy()

#: Where procio has no way of its own to run children (Windows), they are started by
#: :func:`anyio.open_process` and driven through ``_delegated.DelegatedProcess``.
DELEGATE = sys.platform == "win32"

if sys.platform != "win32":
    import fcntl

    # Linux only; Popen's own pipesize= uses the same call.
    _F_SETPIPE_SZ: int | None = getattr(fcntl, "F_SETPIPE_SZ", None)
else:  # pragma: no cover - Windows
    _F_SETPIPE_SZ = None

# Popen options that procio sets from its own arguments: passing them is a mistake.
_REFUSED_POPEN_KWARGS = {
    "args": "pass the command as the first argument",
    "shell": "a str or bytes command runs in the shell, a sequence runs directly",
}
# Popen options that would turn the pipes into something other than byte streams. They
# do nothing when no stream is a pipe (a worker started with file descriptors, say), and
# are accepted then, so that any Popen option can still pass through.
_PIPE_POPEN_KWARGS = {
    "text": "the streams carry bytes; wrap them in procio_text to decode",
    "universal_newlines": "the streams carry bytes; wrap them in procio_text to decode",
    "encoding": "the streams carry bytes; wrap them in procio_text to decode",
    "errors": "the streams carry bytes; wrap them in procio_text to decode",
    "bufsize": "the streams are unbuffered pipes",
}


class Process(anyio.abc.Process):
    """A running child process, with byte streams for its standard streams.

    Returned by :func:`open_process`; use it as an async context manager, or call
    :meth:`aclose`, so the child is always waited for and its pipes closed.

    If :meth:`aclose` (and so leaving ``async with``) is cancelled while waiting, the
    child is stopped as its :class:`CancelPolicy` says, reaped, and the cancellation
    goes on; afterwards :attr:`returncode` is set and every stream raises
    :exc:`anyio.ClosedResourceError`.
    """

    def __init__(
        self,
        popen: subprocess.Popen[bytes] | SpawnedChild,
        stdin: PipeSendStream | None,
        stdout: PipeReceiveStream | None,
        stderr: PipeReceiveStream | None,
        exit_fd: int | None,
        cancel_policy: CancelPolicy,
        signal_tree: bool,
    ) -> None:
        self._popen = popen
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        # Readable once the child has exited: a pidfd, or a waiter thread's pipe.
        self._exit_fd = exit_fd
        self._cancel_policy = cancel_policy
        self._signal_tree = signal_tree
        self._watching = False
        self._exit_event: anyio.Event | None = None

    def __del__(self) -> None:
        # Dropped without aclose(): at least do not leak the exit fd. (Popen itself warns
        # about a child still running and reaps it later.)
        exit_fd = getattr(self, "_exit_fd", None)
        if exit_fd is not None:
            self._exit_fd = None
            with suppress(OSError):
                os.close(exit_fd)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} returncode={self._popen.returncode}>"

    # -- what anyio.abc.Process asks for -------------------------------------------

    @property
    def pid(self) -> int:
        """The process ID of the child."""
        return self._popen.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, ``-N`` if killed by signal N, or ``None`` while it runs.

        Reading it reaps the child if it has exited, without blocking.
        """
        return self._poll()

    @property
    def stdin(self) -> anyio.abc.ByteSendStream | None:
        """The child's standard input, if it was opened with ``stdin=PIPE``."""
        return self._stdin

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard output, if it was opened with ``stdout=PIPE``."""
        return self._stdout

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard error, if it was opened with ``stderr=PIPE``."""
        return self._stderr

    @property
    def cancel_policy(self) -> CancelPolicy:
        """How the child is stopped when :meth:`aclose` is cancelled."""
        return self._cancel_policy

    @property
    def signal_tree(self) -> bool:
        """Whether signals go to the child's whole process group."""
        return self._signal_tree

    async def wait(self) -> int:
        """Wait until the child exits, reap it and return its exit code.

        It returns as soon as the child exits, even if a grandchild still holds the
        child's pipes open. Cancelling it leaves the child running.
        """
        waited = False
        while True:
            returncode = self._poll()
            if returncode is not None:
                if not waited:
                    await checkpoint()
                return returncode
            waited = True
            if self._watching:
                # Another task already waits on this child; wake up when it stops,
                # whether because the child exited or because that task was cancelled.
                if self._exit_event is None:
                    self._exit_event = anyio.Event()
                await self._exit_event.wait()
                continue
            self._watching = True
            try:
                assert self._exit_fd is not None
                await wait_for_exit(self._exit_fd)
            finally:
                self._stop_watching()

    def send_signal(self, signal: Signals) -> None:
        """Send *signal* to the child (to its process group with ``signal_tree=True``).

        Nothing is sent to the child alone once it has been reaped, so a recycled pid
        is never hit. With ``signal_tree=True`` the group is still signalled after the
        child is reaped, as long as members of it remain: the system never hands out
        a process-group id again while that group has a member, so the id is known to
        be ours as long as no process has taken the child's pid, which is checked
        first.
        """
        if self._signal_tree and sys.platform != "win32":
            self._signal_group(signal)
        else:
            self._popen.send_signal(signal)

    def terminate(self) -> None:
        """Ask the child to exit: ``SIGTERM`` on POSIX, ``TerminateProcess`` on Windows."""
        if sys.platform == "win32":
            self._popen.terminate()
        else:
            self.send_signal(Signals.SIGTERM)

    def kill(self) -> None:
        """Kill the child: ``SIGKILL`` on POSIX, ``TerminateProcess`` on Windows."""
        if sys.platform == "win32":
            self._popen.kill()
        else:
            self.send_signal(Signals.SIGKILL)

    async def aclose(self) -> None:
        """Close the pipes, then wait for the child to exit.

        Closing the pipes first lets a child blocked on a full pipe fail its write and
        exit. If this is cancelled, the child is stopped according to
        :attr:`cancel_policy` and reaped before the cancellation propagates.
        """
        self._close_streams()
        try:
            await self.wait()
        except BaseException:
            with CancelScope(shield=True):
                await self.stop()
            raise
        finally:
            self._close_exit_fd()

    # -- procio additions ----------------------------------------------------------

    async def stop(self, cancel_policy: CancelPolicy | None = None) -> int:
        """Stop the child as *cancel_policy* says (default: this process's policy).

        Sends the policy's signal, waits up to its grace period, then sends
        ``SIGKILL``; waits for the child and reaps it. With ``signal_tree=True`` the
        rest of the process group gets the same treatment. Returns the exit code. It is
        what :meth:`aclose` and :func:`run_process` do on cancellation; call it shielded
        if it must finish even when the caller is cancelled.
        """
        policy = self._cancel_policy if cancel_policy is None else cancel_policy
        deadline = anyio.current_time() + policy.grace_period
        if policy.grace_period > 0:
            if self._poll() is None or self._signal_tree:
                self._signal_polite(policy.signal)
            if self._poll() is None:
                with move_on_after(policy.grace_period):
                    await self.wait()
        if self._poll() is None:
            self.kill()
        returncode = await self.wait()
        if self._signal_tree and sys.platform != "win32":
            await _finish_group(self._popen.pid, deadline if policy.grace_period > 0 else 0.0)
        return returncode

    # -- internals -----------------------------------------------------------------

    def _signal_polite(self, sig: Signals) -> None:
        if sys.platform == "win32":
            self._popen.terminate()
        elif self._signal_tree:
            # The leader may already be gone while the rest of its group lives on.
            self._signal_group(sig)
        else:
            self._popen.send_signal(sig)

    def _signal_group(self, sig: Signals) -> None:
        pgid = self._popen.pid
        if self._popen.returncode is not None:
            # The leader is reaped. Its pid (the group's id) cannot be handed out
            # again while the group has a member; if a process has that pid now, the
            # group is gone and the number belongs to someone else.
            try:
                os.kill(pgid, 0)
            except ProcessLookupError:
                pass  # no such process: the group, if it has members, is ours
            except PermissionError:
                return  # someone else's process has the number
            else:
                return
        with suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def _stop_watching(self) -> None:
        # Called by the task that watched the exit fd when it stops, for any reason: the
        # other waiters wake up and one of them takes over if the child still runs.
        self._watching = False
        if self._exit_event is not None:
            self._exit_event.set()
            self._exit_event = None
        self._poll()

    def _poll(self) -> int | None:
        returncode = self._popen.returncode
        if returncode is None:
            returncode = self._popen.poll()
        if returncode is not None and not self._watching:
            self._close_exit_fd()
        return returncode

    def _close_exit_fd(self) -> None:
        # Only once the child is reaped (or never will be by us): the exit fd is what
        # keeps a waiting task informed until then. And never under the task that
        # watches it (a wait() or run_process's poller): an fd closed while an event
        # loop or an epoll set watches it is silently dropped there, and that task
        # would never wake. The watcher closes it when it stops (_stop_watching).
        if self._exit_fd is not None and self._popen.returncode is not None and not self._watching:
            exit_fd, self._exit_fd = self._exit_fd, None
            os.close(exit_fd)

    def _close_now(self) -> bool:
        """Close a reaped child's pipes and exit fd without the event loop, if possible."""
        self._close_streams()
        self._close_exit_fd()
        return True

    def _close_streams(self) -> None:
        for stream in (self._stdin, self._stdout, self._stderr):
            if stream is not None:
                stream.close()


async def _finish_group(pgid: int, deadline: float) -> None:
    """Wait until the group *pgid* has no live member left, killing it at *deadline*.

    Returns once nothing in the group runs any more, so the caller can promise that no
    grandchild outlives it. The wait after ``SIGKILL`` is bounded: a process stuck in
    the kernel (uninterruptible I/O) dies when that ends, and is left to do so.
    """
    killed_at: float | None = None
    delay = 0.002
    while _group_has_live_members(pgid):
        now = anyio.current_time()
        if killed_at is None and now >= deadline:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            killed_at = now
            delay = 0.002
        elif killed_at is not None and now - killed_at > _KILL_SETTLE_TIME:
            return
        pause = delay if killed_at is not None else min(delay, max(deadline - now, 0))
        await anyio.sleep(pause)
        delay = min(delay * 2, 0.05)


# How long to wait for killed group members to be gone before giving up on them.
_KILL_SETTLE_TIME = 2.0

_SCAN_PROC = sys.platform == "linux"


def _group_has_live_members(pgid: int) -> bool:
    # One system call tells whether the group has any member at all (zombies count);
    # only then is it worth reading every /proc/*/stat to see whether one still runs.
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    if _SCAN_PROC:
        # An orphaned grandchild that has exited stays a zombie (and a group member)
        # until its new parent reaps it, which a container's pid 1 may never do; only
        # members that still run count.
        return _linux_group_has_running_member(pgid)
    return True


def _linux_group_has_running_member(pgid: int) -> bool:
    try:
        entries = os.listdir("/proc")
    except OSError:
        return False
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        # Fields after the command name (which may hold spaces and parentheses):
        # state ppid pgrp ...
        fields = stat[stat.rfind(b")") + 2 :].split(b" ", 3)
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False


def _check_stream_spec(name: str, value: object, *, allow_stdout: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        raise TypeError(f"{name} must be PIPE, DEVNULL, a file descriptor or a file, not a bool")
    if isinstance(value, int):
        allowed = {PIPE, DEVNULL} | ({STDOUT} if allow_stdout else set())
        if value < 0 and value not in allowed:
            if value == STDOUT:
                raise ValueError(f"{name}=STDOUT is only valid for stderr")
            raise ValueError(f"{name} must be PIPE, DEVNULL or a file descriptor, not {value}")
        return
    if not callable(getattr(value, "fileno", None)):
        raise TypeError(
            f"{name} must be PIPE, DEVNULL, a file descriptor or an object with fileno(), "
            f"not {type(value).__name__}"
        )


def _normalize_command(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
) -> tuple[str | bytes | list[str | bytes | PathLike[str] | PathLike[bytes]], bool]:
    if isinstance(command, PathLike):
        command = os.fspath(command)
    if isinstance(command, (str, bytes)):
        if not command:
            raise ValueError("the command must not be empty")
        return command, True
    if isinstance(command, (bytearray, memoryview)) or not isinstance(command, Iterable):
        raise TypeError(
            "the command must be a str or bytes (run by the shell) or a sequence of "
            f"arguments, not {type(command).__name__}"
        )
    args = list(command)
    if not args:
        raise ValueError("the command must not be an empty sequence")
    for arg in args:
        if not isinstance(arg, (str, bytes, PathLike)):
            raise TypeError(
                f"every argument must be a str, bytes or path, not {type(arg).__name__}: {arg!r}"
            )
    return args, False


def check_arguments(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    stdin: int | IO[Any] | None,
    stdout: int | IO[Any] | None,
    stderr: int | IO[Any] | None,
    cancel_policy: CancelPolicy,
    popen_kwargs: Mapping[str, Any],
) -> tuple[str | bytes | list[Any], bool]:
    """Refuse what no way of starting a child accepts; return (args, whether shell)."""
    args, shell = _normalize_command(command)
    _check_stream_spec("stdin", stdin)
    _check_stream_spec("stdout", stdout)
    _check_stream_spec("stderr", stderr, allow_stdout=True)
    if not isinstance(cancel_policy, CancelPolicy):
        raise TypeError(f"cancel_policy must be a CancelPolicy, not {type(cancel_policy).__name__}")
    for key in popen_kwargs:
        if key in _REFUSED_POPEN_KWARGS:
            raise TypeError(f"open_process() does not accept {key}=: {_REFUSED_POPEN_KWARGS[key]}")
        if key in _PIPE_POPEN_KWARGS and PIPE in (stdin, stdout, stderr):
            raise TypeError(f"{key}= does not go with PIPE streams: {_PIPE_POPEN_KWARGS[key]}")
    return args, shell


def _make_pipe(pipesize: int) -> tuple[int, int]:
    read_fd, write_fd = os.pipe()
    if pipesize > 0 and _F_SETPIPE_SZ is not None:
        # Failing is harmless: beyond /proc/sys/fs/pipe-max-size or the user's quota.
        with suppress(OSError):
            fcntl.fcntl(write_fd, _F_SETPIPE_SZ, pipesize)
    return read_fd, write_fd


async def open_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    stdin: int | IO[Any] | None = PIPE,
    stdout: int | IO[Any] | None = PIPE,
    stderr: int | IO[Any] | None = PIPE,
    cwd: StrOrBytesPath | None = None,
    env: Mapping[str, str] | None = None,
    startupinfo: Any = None,
    creationflags: int = 0,
    start_new_session: bool = False,
    pass_fds: Sequence[int] = (),
    user: str | int | None = None,
    group: str | int | None = None,
    extra_groups: Iterable[str | int] | None = None,
    umask: int = -1,
    cancel_policy: CancelPolicy = _DEFAULT_POLICY,
    signal_tree: bool = False,
    **popen_kwargs: Any,
) -> Process:
    """Start a command in a child process and return a :class:`Process` handle.

    The arguments are those of :func:`anyio.open_process`, and mean what they mean for
    :class:`subprocess.Popen`.

    Args:
        command: a ``str`` or ``bytes`` runs in the shell (``/bin/sh -c``); a sequence
            of arguments runs its first item directly.
        stdin: ``PIPE`` (a :class:`~anyio.abc.ByteSendStream` on
            :attr:`Process.stdin`), ``DEVNULL``, a file descriptor, a file object, or
            ``None`` to share the parent's.
        stdout: like *stdin*, for the child's output (:attr:`Process.stdout`).
        stderr: like *stdout*, or ``STDOUT`` to send it to the same place as stdout.
        cwd: the working directory of the child.
        env: the child's whole environment (the parent's when ``None``).
        startupinfo: Windows only, as for :class:`subprocess.Popen`.
        creationflags: Windows only, as for :class:`subprocess.Popen`.
        start_new_session: run ``setsid()`` in the child (POSIX).
        pass_fds: file descriptors the child inherits (POSIX).
        user: the user to run the child as (POSIX).
        group: the group to run the child as (POSIX).
        extra_groups: supplementary groups of the child (POSIX).
        umask: the child's umask, when not negative (POSIX).
        cancel_policy: how :meth:`Process.aclose` stops the child when it is
            cancelled; by default ``SIGTERM``, 5 seconds of grace, then ``SIGKILL``.
        signal_tree: start the child in a new process group and send every signal,
            including the cancellation policy's, to that whole group, so that its own
            children are stopped with it (POSIX).
        **popen_kwargs: passed on to :class:`subprocess.Popen` (``close_fds``,
            ``executable``, ``process_group``, ``preexec_fn``, ``pipesize``...).

    Returns:
        The running process.

    Raises:
        FileNotFoundError: if the executable (or *cwd*) does not exist.
        TypeError: for an argument of the wrong type, or a Popen option that would
            change what the streams carry (``text``, ``encoding``, ``shell``...).
        ValueError: for conflicting or out-of-range options.
    """
    options: dict[str, Any] = {
        "stdin": stdin,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": cwd,
        "env": env,
        "startupinfo": startupinfo,
        "creationflags": creationflags,
        "start_new_session": start_new_session,
        "pass_fds": pass_fds,
        "user": user,
        "group": group,
        "extra_groups": extra_groups,
        "umask": umask,
        "cancel_policy": cancel_policy,
        "signal_tree": signal_tree,
    }
    return await start(command, checkpoint, {**options, **popen_kwargs})


async def start(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    before_spawn: Callable[[], Awaitable[None]],
    options: dict[str, Any],
) -> Process:
    """Start the child with *options* (:func:`open_process`'s keyword arguments).

    Where procio delegates, AnyIO starts it. Elsewhere :func:`spawn` does, right after
    *before_spawn* (a checkpoint of the caller's choice); nothing after the spawn yields,
    so the caller gets the :class:`Process` before any cancellation can strike.
    """
    if DELEGATE:
        from ._delegated import start_delegated

        return await start_delegated(command, **options)
    await before_spawn()
    return spawn(command, **options)


def spawn(
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
