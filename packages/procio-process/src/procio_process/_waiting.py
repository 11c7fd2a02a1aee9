"""Learning when a child has exited, without SIGCHLD and, on Linux, without a thread.

On Linux (5.3 and later) :func:`os.pidfd_open` gives a file descriptor that becomes
readable when the process exits; AnyIO's ``wait_readable`` waits on it on asyncio, uvloop
and Trio alike. Elsewhere, or when a sandbox refuses ``pidfd_open``, a worker thread
blocks until the child exits: in ``waitid(..., WNOWAIT)`` on Linux, which leaves the
reaping to the event loop's thread, and in :meth:`subprocess.Popen.wait` elsewhere (as on
macOS). In every case the child is reaped through :class:`subprocess.Popen`'s own
bookkeeping, so its ``returncode`` and its protection against signalling a reaped pid
keep working.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys

from anyio import to_thread, wait_readable

from ._spawn import SpawnedChild

_pidfd_usable = sys.platform == "linux" and hasattr(os, "pidfd_open")


def open_pidfd(pid: int) -> int | None:
    """Return a pidfd for the (not yet reaped) child *pid*, or ``None`` to use a thread."""
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


async def wait_for_exit(popen: subprocess.Popen[bytes] | SpawnedChild, pidfd: int | None) -> None:
    """Return once the child has exited (it may still need reaping)."""
    if pidfd is not None:
        await wait_readable(pidfd)
    else:
        await to_thread.run_sync(_block_until_exit, popen, abandon_on_cancel=True)


# waitid(WNOWAIT) is used where it is known to behave (Linux); elsewhere the thread
# simply runs Popen.wait(), whose lock keeps it consistent with polls from the loop.
_USE_WAITID = sys.platform == "linux" and hasattr(os, "waitid")


def _block_until_exit(popen: subprocess.Popen[bytes] | SpawnedChild) -> None:
    if _USE_WAITID:
        # WNOWAIT leaves the child to be reaped by Popen in the event loop thread, so
        # an abandoned thread never races Popen's own bookkeeping.
        try:
            os.waitid(os.P_PID, popen.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass  # already reaped
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept as a guard
            pass
    else:
        popen.wait()
