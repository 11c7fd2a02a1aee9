"""Starting a plain child with :func:`os.posix_spawn`, without :class:`subprocess.Popen`.

Most commands need nothing that :func:`os.posix_spawn` cannot do: a path or a ``PATH``
lookup, three standard streams that are pipes, ``/dev/null`` or inherited, and perhaps
a new session or process group. ``Popen`` itself uses ``posix_spawn`` for many of them
on Python 3.13+, but its Python-level bookkeeping around the call still costs the parent
a good share of a spawn; calling ``posix_spawn`` directly saves that.

It is used only where it can do exactly what ``Popen`` would:

* ``close_fds=True`` needs the ``closefrom`` file action of Python 3.13+ on glibc 2.34+
  (:data:`os.POSIX_SPAWN_CLOSEFROM`), so every descriptor above 2 is closed in the child
  with no window for a race; without it, ``Popen`` starts the child.
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
from collections.abc import Mapping
from contextlib import suppress
from typing import Any

# Python 3.13+ on glibc 2.34+ (or another libc with posix_spawn_file_actions_addclosefrom_np).
_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)

#: Whether :func:`spawn` can start children here.
AVAILABLE = sys.platform == "linux" and _CLOSEFROM is not None
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
    program = os.fspath(argv[0])
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
        pid = os.posix_spawn(program, argv, env, **options)  # type: ignore[arg-type]
    else:
        # Searched in this process's PATH, which is the child's only when env is None;
        # the caller checks that.
        pid = os.posix_spawnp(program, argv, env, **options)  # type: ignore[arg-type]
    child = SpawnedChild(pid)
    # After the spawn, not before: the new child runs meanwhile. (Read without the
    # lock: a child dropped by another thread right now is reaped next time.)
    if _unreaped:
        _reap_dropped()
    return child


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
