"""The :class:`Process` handle, as users see it, and what every platform's handle shares.

``Process`` is abstract: each platform module brings its own subclass, and
:func:`~procio_process.open_process` picks the module once (see ``_open``):

* ``_posix.PosixProcess`` where procio starts children itself (pipes, a pidfd or a
  waiter thread, ``posix_spawn`` or ``Popen``);
* ``_delegated.DelegatedProcess`` where :func:`anyio.open_process` starts them
  (Windows), wrapped so that the cancellation policy works the same.

What they share is here: the cancellation policy and :meth:`Process.stop`, which is
written once against a few private hooks each subclass provides.
"""

from __future__ import annotations

import os
import signal
import sys
from abc import ABCMeta, abstractmethod
from contextlib import suppress
from signal import Signals
from typing import Any, NoReturn, TypeVar

import anyio
import anyio.abc
from anyio import move_on_after

from ._policy import CancelPolicy
from ._procfs import proc_stats

_T = TypeVar("_T")


class _NoPublicConstructor(ABCMeta):
    """Refuses ``Cls(...)``: the platform modules build handles with ``Cls._create(...)``.

    A handle made by hand would wrap no child at all, or a child that nothing waits
    for; :func:`~procio_process.open_process` is the one way to get one.
    """

    def __call__(cls, *args: object, **kwargs: object) -> NoReturn:
        raise TypeError(
            f"{cls.__name__} has no public constructor: start a child with "
            "open_process() (or run_process(), whose task_status hands one out)"
        )

    def _create(cls: type[_T], *args: Any, **kwargs: Any) -> _T:
        # type.__call__ runs __new__ and __init__, as Cls(...) would have; typeshed
        # types it as returning Any, hence the ignore.
        return type.__call__(cls, *args, **kwargs)  # type: ignore[no-any-return]


class Process(anyio.abc.Process, metaclass=_NoPublicConstructor):
    """A running child process, with byte streams for its standard streams.

    Returned by :func:`open_process`; use it as an async context manager, or call
    :meth:`aclose`, so the child is always waited for and its pipes closed. It cannot
    be constructed directly (``Process(...)`` raises :exc:`TypeError`), but it is the
    type to annotate with and to check with :func:`isinstance`.

    If :meth:`aclose` (and so leaving ``async with``) is cancelled while waiting, the
    child is stopped as its :class:`CancelPolicy` says, reaped, and the cancellation
    goes on; afterwards :attr:`returncode` is set and every stream raises
    :exc:`anyio.ClosedResourceError`.
    """

    def __init__(self, cancel_policy: CancelPolicy, signal_tree: bool) -> None:
        self._cancel_policy = cancel_policy
        self._signal_tree = signal_tree

    # -- what anyio.abc.Process asks for -------------------------------------------

    @property
    @abstractmethod
    def pid(self) -> int:
        """The process ID of the child."""

    @property
    @abstractmethod
    def returncode(self) -> int | None:
        """The exit code, ``-N`` if killed by signal N, or ``None`` while it runs.

        Reading it reaps the child if it has exited, without blocking.
        """

    @property
    @abstractmethod
    def stdin(self) -> anyio.abc.ByteSendStream | None:
        """The child's standard input, if it was opened with ``stdin=PIPE``."""

    @property
    @abstractmethod
    def stdout(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard output, if it was opened with ``stdout=PIPE``."""

    @property
    @abstractmethod
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard error, if it was opened with ``stderr=PIPE``."""

    @abstractmethod
    async def wait(self) -> int:
        """Wait until the child exits, reap it and return its exit code.

        It returns as soon as the child exits, even if a grandchild still holds the
        child's pipes open. Cancelling it leaves the child running.
        """

    @abstractmethod
    def send_signal(self, signal: Signals) -> None:
        """Send *signal* to the child (to its process group with ``signal_tree=True``).

        Nothing is sent to the child alone once it has been reaped, so a recycled pid
        is never hit. With ``signal_tree=True`` the group is still signalled after the
        child is reaped, as long as members of it remain: the system never hands out
        a process-group id again while that group has a member, so the id is known to
        be ours as long as no process has taken the child's pid, which is checked
        first.
        """

    @abstractmethod
    def terminate(self) -> None:
        """Ask the child to exit: ``SIGTERM`` on POSIX, ``TerminateProcess`` on Windows."""

    @abstractmethod
    def kill(self) -> None:
        """Kill the child: ``SIGKILL`` on POSIX, ``TerminateProcess`` on Windows."""

    @abstractmethod
    async def aclose(self) -> None:
        """Close the pipes, then wait for the child to exit.

        Closing the pipes first lets a child blocked on a full pipe fail its write and
        exit. If this is cancelled, the child is stopped according to
        :attr:`cancel_policy` and reaped before the cancellation propagates.
        """

    # -- procio additions ----------------------------------------------------------

    @property
    def cancel_policy(self) -> CancelPolicy:
        """How the child is stopped when :meth:`aclose` is cancelled."""
        return self._cancel_policy

    @property
    def signal_tree(self) -> bool:
        """Whether signals go to the child's whole process group."""
        return self._signal_tree

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
        if self._signal_tree:
            # Only a POSIX handle can have signal_tree set: elsewhere it is refused.
            await _finish_group(self.pid, deadline if policy.grace_period > 0 else 0.0)
        return returncode

    # -- what each platform's handle provides besides the public methods -----------

    @abstractmethod
    def _poll(self) -> int | None:
        """The exit code if the child has exited (reaping it), else ``None``; never blocks."""

    @abstractmethod
    def _signal_polite(self, sig: Signals) -> None:
        """Send a cancellation policy's first signal (to the group with ``signal_tree``)."""

    @abstractmethod
    def _close_now(self) -> bool:
        """Close a reaped child's streams without the event loop; ``False`` if it cannot."""


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
