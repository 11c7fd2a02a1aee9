""":func:`open_process`, and the one place where the platform's way of starting is chosen."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import IO, Any

from anyio.lowlevel import checkpoint

from . import _delegated, _posix
from ._options import DEFAULT_POLICY, PIPE, Options, StrOrBytesPath
from ._policy import CancelPolicy
from ._process import Process

#: Which platform module starts children: where procio has no way of its own to run
#: them (Windows), ``_delegated`` (:func:`anyio.open_process` starts them); everywhere
#: else ``_posix``. Set once at import; read by :func:`start`, so that the tests can
#: run the Windows way on POSIX too.
DELEGATE = sys.platform == "win32"


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
    cancel_policy: CancelPolicy = DEFAULT_POLICY,
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
    options = Options(
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        startupinfo=startupinfo,
        creationflags=creationflags,
        start_new_session=start_new_session,
        pass_fds=pass_fds,
        user=user,
        group=group,
        extra_groups=extra_groups,
        umask=umask,
        cancel_policy=cancel_policy,
        signal_tree=signal_tree,
        popen_kwargs=popen_kwargs,
    )
    return await start(command, checkpoint, options)


async def start(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    before_spawn: Callable[[], Awaitable[None]],
    options: Options,
) -> Process:
    """Start the child with *options* on this platform's way.

    Where procio delegates, AnyIO starts it. Elsewhere ``_posix`` does, right after
    *before_spawn* (a checkpoint of the caller's choice); nothing after the spawn yields,
    so the caller gets the :class:`Process` before any cancellation can strike.
    """
    if DELEGATE:
        return await _delegated.start(command, before_spawn, options)
    return await _posix.start(command, before_spawn, options)
