"""Learning when a child has exited, without SIGCHLD and without AnyIO's thread pool.

Every child gets one *exit fd*: a file descriptor that becomes readable when it exits,
which AnyIO's ``wait_readable`` (or run_process's private epoll set) waits on, on
asyncio, uvloop and Trio alike.

* On Linux 5.3 and later it is a pidfd (:func:`os.pidfd_open`), and no thread is needed.
* Elsewhere (macOS, old kernels, sandboxes that refuse ``pidfd_open``) it is the read
  end of a pipe whose write end a waiter thread holds. The thread, one per child and
  started once with it, blocks until the child exits and then closes the write end,
  which makes the read end readable (end of file). It blocks in ``waitid(...,
  WNOWAIT)`` on Linux, which leaves the reaping to the event loop's thread, and in
  :meth:`subprocess.Popen.wait` elsewhere. It is a plain daemon thread, outside
  AnyIO's default thread limiter, so waiting children never hold up
  ``to_thread.run_sync``; a cancelled wait leaves it in place for the next wait.

In every case the child is reaped through :class:`subprocess.Popen`'s own bookkeeping
(or :class:`SpawnedChild`'s, which mirrors it), so its ``returncode`` and its
protection against signalling a reaped pid keep working.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import threading
from contextlib import suppress

from anyio import wait_readable

from ._spawn import SpawnedChild

_pidfd_usable = sys.platform == "linux" and hasattr(os, "pidfd_open")

# waitid(WNOWAIT) is used where it is known to behave (Linux); elsewhere the thread
# simply runs Popen.wait(), whose lock keeps it consistent with polls from the loop.
_USE_WAITID = sys.platform == "linux" and hasattr(os, "waitid")


def open_pidfd(pid: int) -> int | None:
    """Return a pidfd for the (not yet reaped) child *pid*, or ``None`` where there is none."""
    global _pidfd_usable
    if not _pidfd_usable:
        return None
    try:
        return os.pidfd_open(pid)
    except OSError as exc:
        if exc.errno in (errno.ENOSYS, errno.EPERM, errno.EACCES):
            # An old kernel or a seccomp profile without pidfd_open: it will not
            # change during this run, so do not ask again for every child.
            _pidfd_usable = False
            return None
        if exc.errno == errno.ESRCH:
            # Reaped already, by someone else (SIGCHLD set to SIG_IGN reaps at once):
            # the waiter thread finds it gone and reports the exit straight away.
            return None
        raise


def open_exit_fd(popen: subprocess.Popen[bytes] | SpawnedChild) -> int:
    """Return the exit fd of the just started child *popen* (see the module's text).

    If none can be made (no file descriptor or thread left), the child is killed and
    reaped, and the error is raised: a child nobody can wait for must not live on.
    """
    try:
        pidfd = open_pidfd(popen.pid)
        if pidfd is not None:
            return pidfd
        return _start_waiter(popen)
    except BaseException:
        with suppress(OSError):
            popen.send_signal(signal.SIGKILL)
        popen.wait()
        raise


class _Waiter:
    """The write end of one waiter thread's pipe, closed once by whichever side is first."""

    __slots__ = ("_lock", "write_fd")

    def __init__(self, write_fd: int) -> None:
        self.write_fd = write_fd
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            if self.write_fd >= 0:
                os.close(self.write_fd)
                self.write_fd = -1


# Read end of each waiter thread's pipe -> its waiter, so that closing the exit fd
# closes the write end too when the child was reaped before the thread let go of it.
_waiters: dict[int, _Waiter] = {}
_waiters_lock = threading.Lock()


def close_exit_fd(exit_fd: int) -> None:
    """Close an exit fd, and the write end of its waiter thread's pipe if it has one.

    Call it only once the child has been reaped: the waiter thread then has nothing
    left to wait for, and ends.
    """
    if _waiters:  # (a pidfd has no waiter: no lock for it)
        with _waiters_lock:
            waiter = _waiters.pop(exit_fd, None)
        if waiter is not None:
            waiter.close()
    os.close(exit_fd)


def _start_waiter(popen: subprocess.Popen[bytes] | SpawnedChild) -> int:
    read_fd, write_fd = os.pipe()
    waiter = _Waiter(write_fd)
    with _waiters_lock:
        _waiters[read_fd] = waiter
    try:
        thread = threading.Thread(
            target=_wait_then_close,
            args=(popen, waiter),
            name=f"procio waiter for pid {popen.pid}",
            daemon=True,
        )
        thread.start()
    except BaseException:
        close_exit_fd(read_fd)
        raise
    return read_fd


def _wait_then_close(popen: subprocess.Popen[bytes] | SpawnedChild, waiter: _Waiter) -> None:
    try:
        if _USE_WAITID:
            # WNOWAIT leaves the child to be reaped by Popen in the event loop's
            # thread, so this thread never races Popen's own bookkeeping.
            with suppress(ChildProcessError):  # already reaped
                os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
        else:
            popen.wait()
    finally:
        waiter.close()


async def wait_for_exit(exit_fd: int) -> None:
    """Return once the child of *exit_fd* has exited (it may still need reaping)."""
    await wait_readable(exit_fd)
