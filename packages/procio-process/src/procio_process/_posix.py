"""Children that procio starts and drives itself: every platform but Windows.

:func:`start_posix` makes the pipes, starts the child with ``posix_spawn`` or ``Popen``
and opens its exit fd (a pidfd, or a waiter thread's pipe); :class:`PosixProcess` is
the :class:`~procio_process.Process` over all that. It is what
:func:`~procio_process.open_process` and :func:`~procio_process.run_process` do after
their checkpoint wherever ``_open`` does not delegate to AnyIO.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from contextlib import suppress
from signal import Signals
from typing import IO, Any

import anyio
import anyio.abc
from anyio import CancelScope
from anyio.lowlevel import checkpoint

from . import _spawn
from ._fdstream import set_pipe_size
from ._options import (
    DEVNULL,
    PIPE,
    STDOUT,
    Options,
    StrOrBytesPath,
    check_arguments,
    normalize_command,
)
from ._policy import CancelPolicy
from ._process import Process
from ._spawn import SpawnedChild
from ._streams import PipeReceiveStream, PipeSendStream
from ._waiting import close_exit_fd, open_exit_fd, wait_for_exit


async def start(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    before_spawn: Callable[[], Awaitable[None]],
    options: Options,
) -> PosixProcess:
    """Await *before_spawn* (the caller's checkpoint), then :func:`start_posix`."""
    await before_spawn()
    return start_posix(command, options)


def start_posix(
    command: StrOrBytesPath | Sequence[StrOrBytesPath], options: Options
) -> PosixProcess:
    """Start the child without yielding: what :func:`open_process` does after its checkpoint.

    Nothing between the spawn and the return can be cancelled, so a started child always
    reaches its caller as a :class:`Process`.
    """
    args, shell = check_arguments(command, options)
    popen_kwargs = dict(options.popen_kwargs)
    pipesize = popen_kwargs.pop("pipesize", -1)
    if isinstance(pipesize, bool) or not isinstance(pipesize, int):
        raise TypeError(f"pipesize must be an int, not {type(pipesize).__name__}")

    if options.user is not None:
        popen_kwargs["user"] = options.user
    if options.group is not None:
        popen_kwargs["group"] = options.group
    if options.extra_groups is not None:
        popen_kwargs["extra_groups"] = options.extra_groups
    if options.umask >= 0:
        popen_kwargs["umask"] = options.umask
    start_new_session = options.start_new_session
    if options.signal_tree:
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
        "cwd": options.cwd,
        "env": options.env,
        "startupinfo": options.startupinfo,
        "creationflags": options.creationflags,
        "start_new_session": start_new_session,
        "pass_fds": options.pass_fds,
        **popen_kwargs,
    }
    specs = (options.stdin, options.stdout, options.stderr)
    use_posix_spawn = _spawnable(args, specs, popen_options)

    # The child's ends of the pipes are closed once it has them (or failed to start);
    # the parent's ends only if starting fails, else they become the streams. (Plain
    # lists rather than ExitStacks: this runs before every spawn.)
    child_specs: list[int | IO[Any] | None] = []
    parent_fds: list[int | None] = []
    child_fds: list[int] = []
    try:
        for number, spec in enumerate(specs):
            if spec != PIPE:
                child_specs.append(spec)
                parent_fds.append(None)
                continue
            read_fd, write_fd = os.pipe()
            if number == 0:
                child_fds.append(read_fd)
                parent_fds.append(write_fd)
                child_specs.append(read_fd)
            else:
                child_fds.append(write_fd)
                parent_fds.append(read_fd)
                child_specs.append(write_fd)
            if pipesize > 0:
                # Failing is harmless: beyond /proc/sys/fs/pipe-max-size or the user's quota.
                set_pipe_size(write_fd, pipesize)
        child_stdin, child_stdout, child_stderr = child_specs
        # Both return once the child has called exec (or failed to): they never wait
        # for the child to run, so they do not block the event loop for long.
        popen: subprocess.Popen[bytes] | SpawnedChild
        if use_posix_spawn and all(fd > 2 for fd in child_fds):
            popen = _spawn.spawn(
                args,
                shell=shell,
                env=options.env,
                streams=(child_stdin, child_stdout, child_stderr),  # type: ignore[arg-type]
                setsid=start_new_session,
                setpgroup=popen_kwargs.get("process_group"),
            )
        else:
            popen = subprocess.Popen(
                args, stdin=child_stdin, stdout=child_stdout, stderr=child_stderr, **popen_options
            )
    except BaseException:
        _close_all(child_fds)
        _close_all(fd for fd in parent_fds if fd is not None)
        raise
    _close_all(child_fds)
    try:
        # Kills and reaps the child if it fails: a child nobody can wait for must go.
        exit_fd = open_exit_fd(popen)
    except BaseException:
        _close_all(fd for fd in parent_fds if fd is not None)
        raise

    stdin_fd, stdout_fd, stderr_fd = parent_fds
    return PosixProcess._create(
        popen,
        None if stdin_fd is None else PipeSendStream(stdin_fd),
        None if stdout_fd is None else PipeReceiveStream(stdout_fd),
        None if stderr_fd is None else PipeReceiveStream(stderr_fd),
        exit_fd,
        options.cancel_policy,
        options.signal_tree,
    )


def start_piped(command: list[Any]) -> tuple[SpawnedChild, int, int, int] | None:
    """Start *command* (a list) as ``run_process`` does with all its defaults.

    That is: stdin inherited, stdout and stderr each a new pipe, no other option. It
    returns ``(child, stdout_fd, stderr_fd, exit_fd)``: the parent's ends of the pipes
    (left blocking: :func:`~procio_process._communicate.communicate_piped` reads them
    only when they are ready) and the child's exit fd, all of them the caller's to
    close (the exit fd with :func:`close_exit_fd`, once the child is reaped). It
    returns ``None``, having started nothing, where only :func:`start_posix` can start
    this child (no way of spawning without ``Popen`` here, or the new pipes took
    descriptors 0 to 2, which means the parent's own standard streams are closed). It
    raises what :func:`start_posix` raises for a bad command, a missing program and so
    on.

    Nothing between the spawn and the return yields to the event loop.
    """
    if not _spawn.AVAILABLE:
        return None
    args, _shell = normalize_command(command)
    assert isinstance(args, list)
    stdout_fd, child_stdout = os.pipe()
    try:
        stderr_fd, child_stderr = os.pipe()
    except BaseException:
        _close_all((stdout_fd, child_stdout))
        raise
    child: SpawnedChild | None = None
    try:
        if min(stdout_fd, child_stdout, stderr_fd, child_stderr) > 2:
            child = _spawn.spawn_piped(args, child_stdout, child_stderr)
    except BaseException:
        _close_all((stdout_fd, stderr_fd))
        raise
    finally:
        _close_all((child_stdout, child_stderr))
    if child is None:
        _close_all((stdout_fd, stderr_fd))
        return None
    try:
        # Kills and reaps the child if it fails: a child nobody can wait for must go.
        exit_fd = open_exit_fd(child)
    except BaseException:
        _close_all((stdout_fd, stderr_fd))
        raise
    return child, stdout_fd, stderr_fd, exit_fd


def _close_all(fds: Iterable[int]) -> None:
    """Close every one of *fds*, even if closing one of them fails."""
    for fd in fds:
        with suppress(OSError):
            os.close(fd)


class PosixProcess(Process):
    """A :class:`~procio_process.Process` over a child this module started.

    It owns the parent's ends of the pipes and the exit fd, and reaps the child through
    its ``Popen`` (or :class:`~procio_process._spawn.SpawnedChild`).
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
        super().__init__(cancel_policy, signal_tree)
        self._popen = popen
        self._stdin = stdin
        self._stdout = stdout
        self._stderr = stderr
        # Readable once the child has exited: a pidfd, or a waiter thread's pipe.
        self._exit_fd = exit_fd
        self._watching = False
        self._exit_event: anyio.Event | None = None

    def __del__(self) -> None:
        # Dropped without aclose(): at least do not leak the exit fd. (Popen itself warns
        # about a child still running and reaps it later.)
        exit_fd = getattr(self, "_exit_fd", None)
        if exit_fd is not None:
            self._exit_fd = None
            with suppress(OSError):
                close_exit_fd(exit_fd)

    def __repr__(self) -> str:
        # The one handle users see on this platform: it goes by the public name.
        return f"<Process pid={self.pid} returncode={self._popen.returncode}>"

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
        if self._signal_tree:
            self._signal_group(signal)
        else:
            self._popen.send_signal(signal)

    def terminate(self) -> None:
        """Ask the child to exit with ``SIGTERM``."""
        self.send_signal(Signals.SIGTERM)

    def kill(self) -> None:
        """Kill the child with ``SIGKILL``."""
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

    # -- internals -----------------------------------------------------------------

    def _signal_polite(self, sig: Signals) -> None:
        # With signal_tree the leader may already be gone while its group lives on.
        self.send_signal(sig)

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
            close_exit_fd(exit_fd)

    def _close_now(self) -> bool:
        self._close_streams()
        self._close_exit_fd()
        return True

    def _close_streams(self) -> None:
        for stream in (self._stdin, self._stdout, self._stderr):
            if stream is not None:
                stream.close()


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
