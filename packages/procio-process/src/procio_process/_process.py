"""The :class:`Process` handle: waiting, signalling, stopping and closing a child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import suppress
from signal import Signals

import anyio
import anyio.abc
from anyio import CancelScope, move_on_after
from anyio.lowlevel import checkpoint

from ._policy import CancelPolicy
from ._procfs import proc_stats
from ._spawn import SpawnedChild
from ._streams import PipeReceiveStream, PipeSendStream
from ._waiting import close_exit_fd, wait_for_exit


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
                close_exit_fd(exit_fd)

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
            close_exit_fd(exit_fd)

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
    return any(stat.pgrp == pgid and stat.state not in ("Z", "X") for stat in proc_stats())
