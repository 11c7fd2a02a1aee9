"""Starting a plain child without :class:`subprocess.Popen`.

Most commands need nothing beyond a path or a ``PATH`` lookup, three standard streams
that are pipes, ``/dev/null`` or inherited, and perhaps a new session or process group.
For those, ``Popen``'s Python-level bookkeeping around the system calls costs the parent
a good share of a spawn; calling the primitive underneath directly saves it. There are
two such primitives, tried in this order:

* ``_posixsubprocess.fork_exec``, the C function ``Popen`` itself calls on POSIX
  (``vfork`` then ``exec``, closing every descriptor above 2 in the child). It is
  private to CPython, so it is used only on the versions whose signature is known
  (3.11 to 3.13); it is also the faster of the two, since glibc's ``posix_spawn``
  resets every signal's disposition in the child while the parent waits.
* :func:`os.posix_spawn`, where ``close_fds=True`` can be honoured: the ``closefrom``
  file action of Python 3.13+ on glibc 2.34+ (:data:`os.POSIX_SPAWN_CLOSEFROM`) closes
  every descriptor above 2 in the child with no window for a race.

Either is used only where it does exactly what ``Popen`` would:

* ``close_fds=True``: nothing but the three standard streams reaches the child.
* ``restore_signals=True``: ``SIGPIPE`` and ``SIGXFSZ``, which Python ignores, are set
  back to their default in the child.
* A missing or unrunnable program raises the same :exc:`OSError` subclass, with the
  program as its ``filename``.

Everything else (a working directory, ``pass_fds``, a user or group, a umask, file
objects or descriptors as streams, any other ``Popen`` keyword) goes through ``Popen``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import warnings
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Any

# Python 3.13+ on glibc 2.34+ (or another libc with posix_spawn_file_actions_addclosefrom_np).
_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)


def _find_fork_exec() -> Callable[..., int] | None:
    # The signature (23 positional arguments) is the same from CPython 3.11 to 3.13;
    # other versions and implementations are not guessed at.
    if sys.implementation.name != "cpython" or not (3, 11) <= sys.version_info[:2] <= (3, 13):
        return None
    try:
        import _posixsubprocess
    except ImportError:  # pragma: no cover - CPython on POSIX always has it
        return None
    fork_exec: Callable[..., int] = _posixsubprocess.fork_exec
    return fork_exec


_fork_exec = _find_fork_exec() if sys.platform == "linux" else None

#: How :func:`spawn` starts children here: ``"fork_exec"``, ``"posix_spawn"``, or
#: ``None`` where it cannot (read at every spawn, so that tests can choose).
METHOD: str | None = (
    "fork_exec" if _fork_exec is not None else "posix_spawn" if _CLOSEFROM is not None else None
)
if sys.platform != "linux":
    METHOD = None

#: Whether :func:`spawn` can start children here.
AVAILABLE = METHOD is not None
# The signals Python ignores at startup and Popen(restore_signals=True) resets.
_RESTORED_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ") if hasattr(signal, name)
)

# Children whose handle was dropped while they ran; reaped at the next spawn so that
# they do not stay zombies (what Popen does with its own dropped children).
# __del__ may run in any thread, and spawn() in several: the lock guards the list.
_unreaped: list[int] = []
_unreaped_lock = threading.Lock()


class SpawnedChild:
    """The child of a :func:`spawn`: the part of ``Popen``'s interface procio uses.

    ``returncode`` is ``None`` until the child has been reaped, then its exit code
    (``-N`` for signal N). Reaping is guarded by a lock, as in ``Popen``, so a thread
    that waits and the event loop's non-blocking polls never reap twice.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} returncode={self.returncode}>"

    def __del__(self, _warn: Any = warnings.warn) -> None:
        if getattr(self, "returncode", 0) is not None:
            return
        try:
            running = self.poll() is None
        except Exception:  # interpreter shutdown: os may be half gone
            return
        if running:
            _warn(f"subprocess {self.pid} is still running", ResourceWarning, source=self)
            with _unreaped_lock:
                _unreaped.append(self.pid)

    def poll(self) -> int | None:
        """Reap the child if it has exited, without blocking; return :attr:`returncode`."""
        if self.returncode is None and self._lock.acquire(blocking=False):
            try:
                if self.returncode is None:
                    self._reap(os.WNOHANG)
            finally:
                self._lock.release()
        return self.returncode

    def wait(self) -> int:
        """Block until the child exits, reap it and return its exit code."""
        with self._lock:
            while self.returncode is None:
                self._reap(0)
        return self.returncode

    def _reap(self, options: int) -> None:
        try:
            pid, status = os.waitpid(self.pid, options)
        except ChildProcessError:
            # Reaped by someone else (SIGCHLD set to SIG_IGN, say): the exit code is
            # lost, and Popen reports 0 then too.
            self.returncode = 0
            return
        if pid == self.pid:
            self.returncode = os.waitstatus_to_exitcode(status)

    def send_signal(self, sig: int) -> None:
        """Send *sig* unless the child has been reaped (its pid may be reused by then)."""
        if self.poll() is None:
            with suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def terminate(self) -> None:
        """Send ``SIGTERM``."""
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send ``SIGKILL``."""
        self.send_signal(signal.SIGKILL)


def spawn(
    args: str | bytes | list[Any],
    *,
    shell: bool,
    env: Mapping[str, str] | None,
    streams: tuple[int | None, int | None, int | None],
    setsid: bool,
    setpgroup: int | None,
) -> SpawnedChild:
    """Start *args* (or the shell command ``args``) and return its handle.

    *streams* gives the child's stdin, stdout and stderr: a descriptor above 2 to put
    there, ``DEVNULL``, ``STDOUT`` (stderr only) or ``None`` to inherit.
    """
    argv: list[Any] = ["/bin/sh", "-c", args] if shell else list(args)
    return _start(argv, env, streams, setsid=setsid, setpgroup=setpgroup)


def spawn_piped(argv: list[Any], stdout_fd: int, stderr_fd: int) -> SpawnedChild:
    """:func:`spawn` for ``argv`` with stdin inherited and the two output descriptors.

    What ``run_process([...])`` with its defaults asks for, without the option handling
    of :func:`spawn`. *argv* is a checked list; both descriptors are above 2.
    """
    return _start(argv, None, (None, stdout_fd, stderr_fd), setsid=False, setpgroup=None)


def _start(
    argv: list[Any],
    env: Mapping[str, str] | None,
    streams: tuple[int | None, int | None, int | None],
    *,
    setsid: bool,
    setpgroup: int | None,
) -> SpawnedChild:
    program = os.fspath(argv[0])
    if METHOD == "fork_exec":
        pid = _fork_exec_child(argv, program, env, streams, setsid=setsid, setpgroup=setpgroup)
    else:
        pid = _posix_spawn_child(argv, program, env, streams, setsid=setsid, setpgroup=setpgroup)
    child = SpawnedChild(pid)
    # After the spawn, not before: the new child runs meanwhile. (Read without the
    # lock: a child dropped by another thread right now is reaped next time.)
    if _unreaped:
        _reap_dropped()
    return child


def _posix_spawn_child(
    argv: list[Any],
    program: str | bytes,
    env: Mapping[str, str] | None,
    streams: tuple[int | None, int | None, int | None],
    *,
    setsid: bool,
    setpgroup: int | None,
) -> int:
    actions: list[tuple[Any, ...]] = []
    for target, spec in enumerate(streams):
        if spec is None:
            continue
        if spec == subprocess.DEVNULL:
            actions.append((os.POSIX_SPAWN_OPEN, target, os.devnull, os.O_RDWR, 0))
        elif spec == subprocess.STDOUT:
            actions.append((os.POSIX_SPAWN_DUP2, 1, 2))
        else:
            actions.append((os.POSIX_SPAWN_DUP2, spec, target))
    actions.append((_CLOSEFROM, 3))
    options: dict[str, Any] = {"file_actions": actions, "setsigdef": _RESTORED_SIGNALS}
    if setsid:
        options["setsid"] = True
    if setpgroup is not None:
        options["setpgroup"] = setpgroup
    # env=None is the parent's environment, as for Popen.
    if has_directory(program):
        return os.posix_spawn(program, argv, env, **options)  # type: ignore[arg-type]
    # Searched in this process's PATH, which is the child's only when env is None;
    # the caller checks that.
    return os.posix_spawnp(program, argv, env, **options)  # type: ignore[arg-type]


# What the child reports through the error pipe at most (as Popen reads it).
_ERROR_REPORT_SIZE = 50_000


def _fork_exec_child(
    argv: list[Any],
    program: str | bytes,
    env: Mapping[str, str] | None,
    streams: tuple[int | None, int | None, int | None],
    *,
    setsid: bool,
    setpgroup: int | None,
) -> int:
    assert _fork_exec is not None
    if env is None:
        env_list = None
    else:
        env_list = []
        for key, value in env.items():
            name = os.fsencode(key)
            if b"=" in name:
                raise ValueError("illegal environment variable name")
            env_list.append(name + b"=" + os.fsencode(value))
    executable = os.fsencode(program)
    if b"/" in executable:
        executables: tuple[bytes, ...] = (executable,)
    else:
        # Searched in this process's PATH, which is the child's only when env is None;
        # the caller checks that.
        executables = tuple(
            os.path.join(os.fsencode(directory), executable) for directory in os.get_exec_path()
        )
    stdin, stdout, stderr = streams
    devnull = -1
    low_fds: list[int] = []
    error_read, error_write = os.pipe()
    try:
        # The child reports a failed exec through error_write, which must not be one of
        # the descriptors it is about to replace with its standard streams.
        while error_write < 3:
            low_fds.append(error_write)
            error_write = os.dup(error_write)
        if subprocess.DEVNULL in streams:
            devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        child_in = -1 if stdin is None else devnull if stdin == subprocess.DEVNULL else stdin
        child_out = -1 if stdout is None else devnull if stdout == subprocess.DEVNULL else stdout
        if stderr == subprocess.STDOUT:
            child_err = 1 if child_out == -1 else child_out
        else:
            child_err = (
                -1 if stderr is None else devnull if stderr == subprocess.DEVNULL else stderr
            )
        pid = _fork_exec(
            argv,
            executables,
            True,  # noqa: FBT003 - close_fds (fork_exec takes positional arguments only)
            (error_write,),  # kept open until the exec, which closes it (close-on-exec)
            None,  # cwd
            env_list,
            child_in,  # the child's ends of stdin, stdout and stderr, each after the
            -1,  # parent's end, which the child would close (they are close-on-exec)
            -1,
            child_out,
            -1,
            child_err,
            error_read,
            error_write,
            True,  # noqa: FBT003 - restore_signals
            setsid,
            -1 if setpgroup is None else setpgroup,
            None,  # gid
            None,  # extra_groups
            None,  # uid
            -1,  # umask
            None,  # preexec_fn
            True,  # noqa: FBT003 - allow_vfork
        )
    except BaseException:
        os.close(error_read)
        raise
    finally:
        os.close(error_write)
        for fd in low_fds:
            os.close(fd)
        if devnull >= 0:
            os.close(devnull)
    try:
        # End of file as soon as the exec closed the child's copy of error_write (at
        # once: with vfork the exec has happened by now), or a report of the failure.
        report = b""
        while len(report) < _ERROR_REPORT_SIZE:
            part = os.read(error_read, _ERROR_REPORT_SIZE)
            if not part:
                break
            report += part
    finally:
        os.close(error_read)
    if report:
        _raise_child_error(pid, report, program)
    return pid


def _raise_child_error(pid: int, report: bytes, program: str | bytes) -> None:
    """Reap the child that failed to exec and raise what it reported, as Popen would."""
    with suppress(ChildProcessError):
        os.waitpid(pid, 0)
    kind, _, rest = report.partition(b":")
    hex_errno, _, message = rest.partition(b":")
    if kind == b"OSError":
        try:
            code = int(hex_errno, 16)
        except ValueError:
            code = 0
        if code:
            # "noexec" marks a failure before the exec (of something other than the
            # program, which therefore is not the filename).
            filename = None if message.startswith(b"noexec") else program
            raise OSError(code, os.strerror(code), filename)
    raise subprocess.SubprocessError(
        message.decode(errors="replace") or report.decode(errors="replace")
    )


def _reap_dropped() -> None:
    """Reap the dropped children that have exited; keep the others for next time."""
    with _unreaped_lock:
        pids = _unreaped[:]
        _unreaped.clear()
    running = []
    for pid in pids:
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                running.append(pid)
        except ChildProcessError:
            pass  # reaped already
    if running:
        with _unreaped_lock:
            _unreaped.extend(running)


def has_directory(program: str | bytes) -> bool:
    """Whether *program* names a path (run as it is) rather than a name to look up."""
    if isinstance(program, bytes):
        return b"/" in program
    return "/" in program
