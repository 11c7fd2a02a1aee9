""":func:`run_process`: run a command to completion and collect its output."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from subprocess import PIPE, CalledProcessError, CompletedProcess, TimeoutExpired
from typing import IO, Any

from anyio import (
    TASK_STATUS_IGNORED,
    BrokenResourceError,
    CancelScope,
    ClosedResourceError,
    create_task_group,
    current_time,
    get_cancelled_exc_class,
)
from anyio.abc import ByteReceiveStream, ByteSendStream, TaskStatus
from anyio.lowlevel import checkpoint_if_cancelled

from . import _communicate, _open
from ._communicate import can_communicate, communicate, communicate_piped
from ._options import DEFAULT_POLICY, Options, StrOrBytesPath
from ._policy import CancelPolicy
from ._posix import PosixProcess, start_piped, start_posix
from ._process import Process
from ._streams import PipeReceiveStream
from ._waiting import close_exit_fd

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup


def lone_interrupt(exc: BaseException) -> KeyboardInterrupt | None:
    """The KeyboardInterrupt that *exc* is, or holds beside cancellations only; else None.

    A task group raises an exception group even for one interrupt, and on Trio a Ctrl-C
    lands in whatever task runs: one of run_process's own reading or writing tasks, or
    one of a worker pool's closing tasks. The first interrupt found is returned.
    """
    cancelled = get_cancelled_exc_class()
    interrupt: KeyboardInterrupt | None = None
    pending = [exc]
    while pending:
        leaf = pending.pop()
        if isinstance(leaf, BaseExceptionGroup):
            pending.extend(reversed(leaf.exceptions))  # in order: the first one first
        elif isinstance(leaf, KeyboardInterrupt):
            interrupt = interrupt or leaf
        elif not isinstance(leaf, cancelled):
            return None
    return interrupt


async def _collect(stream: ByteReceiveStream, chunks: list[bytes]) -> None:
    try:
        async for chunk in stream:
            chunks.append(chunk)
    except ClosedResourceError:
        pass  # closed by the shutdown below, after the child was stopped


async def _feed(stream: ByteSendStream, data: bytes) -> None:
    try:
        if data:
            await stream.send(data)
        await stream.aclose()
    except (BrokenResourceError, ClosedResourceError):
        # The child exited (or closed its stdin) before reading everything, which
        # subprocess.run() does not treat as an error either: the exit code says
        # whether anything went wrong.
        await stream.aclose()


Outputs = list[tuple[ByteReceiveStream, list[bytes]]]


async def _exchange(process: Process, input: bytes | None, outputs: Outputs) -> None:
    """Feed *input*, collect the outputs until EOF and wait for the child's exit."""
    if can_communicate(process):
        pipes = []
        for stream, chunks in outputs:
            assert isinstance(stream, PipeReceiveStream)  # a process with a pidfd has pipes
            pipes.append((stream, chunks))
        await communicate(process, input, pipes)
        return
    async with create_task_group() as tg:
        for stream, chunks in outputs:
            tg.start_soon(_collect, stream, chunks)
        if process.stdin is not None and input is not None:
            tg.start_soon(_feed, process.stdin, input)
        await process.wait()


async def _stop_collecting(process: Process, outputs: Outputs) -> None:
    """Stop *process* by its policy while still reading what it writes meanwhile.

    Must run shielded. Reading on during the grace period keeps a child that flushes
    output on ``SIGTERM`` from blocking on a full pipe, and keeps that output.
    """
    async with create_task_group() as tg:
        for stream, chunks in outputs:
            tg.start_soon(_collect, stream, chunks)
        await process.stop()
        # A grandchild may still hold the pipes open; do not wait for its EOF.
        tg.cancel_scope.cancel()
    # The reading tasks may not have run since the child's last write: take what the
    # pipes already hold without waiting.
    for stream, chunks in outputs:
        _read_available(stream, chunks)
    await process.aclose()


def _read_available(stream: ByteReceiveStream, chunks: list[bytes]) -> None:
    if not isinstance(stream, PipeReceiveStream) or stream.closed:
        return
    # Bounded, in case a grandchild keeps writing.
    for _ in range(256):
        try:
            data = stream._holder.read(65536)
        except (BrokenResourceError, ClosedResourceError):
            return
        if not data:  # None: nothing more for now; b"": end of file
            return
        chunks.append(data)


async def _run_piped(
    command: list[Any], check: bool, cancel_policy: CancelPolicy
) -> CompletedProcess[bytes] | None:
    """:func:`run_process` with every option at its default (stdout and stderr piped).

    The same steps as the general path, on bare descriptors: the :class:`Process` and
    its streams are made only if the run is cancelled or fails while the child runs,
    for the policy's way of stopping it. ``None``, with nothing started, where only the
    general path can start the child.
    """
    # No checkpoint between the spawn and the try block below (see run_process).
    await checkpoint_if_cancelled()
    started = start_piped(command)
    if started is None:
        return None
    child, stdout_fd, stderr_fd, exit_fd = started
    stdout_chunks: list[bytes] = []
    stderr_chunks: list[bytes] = []
    try:
        await communicate_piped(child, exit_fd, stdout_fd, stderr_fd, stdout_chunks, stderr_chunks)
    except BaseException:
        # Stopped the way the general path stops a child, while reading on.
        stdout_stream = PipeReceiveStream(stdout_fd)
        stderr_stream = PipeReceiveStream(stderr_fd)
        process = PosixProcess._create(
            child,
            None,
            stdout_stream,
            stderr_stream,
            exit_fd,
            cancel_policy=cancel_policy,
            signal_tree=False,
        )
        with CancelScope(shield=True):
            await _stop_collecting(
                process, [(stdout_stream, stdout_chunks), (stderr_stream, stderr_chunks)]
            )
        raise
    os.close(stdout_fd)
    os.close(stderr_fd)
    close_exit_fd(exit_fd)  # the child is reaped
    returncode = child.returncode
    assert returncode is not None
    stdout_bytes = b"".join(stdout_chunks)
    stderr_bytes = b"".join(stderr_chunks)
    if check and returncode != 0:
        raise CalledProcessError(returncode, command, stdout_bytes, stderr_bytes)
    return CompletedProcess(command, returncode, stdout_bytes, stderr_bytes)


async def run_process(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    *,
    input: bytes | None = None,
    stdin: int | IO[Any] | None = None,
    stdout: int | IO[Any] | None = PIPE,
    stderr: int | IO[Any] | None = PIPE,
    check: bool = True,
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
    timeout: float | None = None,
    cancel_policy: CancelPolicy = DEFAULT_POLICY,
    signal_tree: bool = False,
    task_status: TaskStatus[Process] = TASK_STATUS_IGNORED,
    **popen_kwargs: Any,
) -> CompletedProcess[bytes]:
    """Run a command, wait for it to finish and return its exit code and output.

    The arguments before *timeout* are those of :func:`anyio.run_process`; see
    :func:`open_process` for the ones they share. Like :func:`subprocess.run`, it waits
    until the child has exited and its output pipes have reached end of file.

    If the caller is cancelled, the child is stopped as *cancel_policy* says (by
    default ``SIGTERM``, 5 seconds of grace, then ``SIGKILL``) and reaped before the
    cancellation propagates.

    Args:
        command: a ``str`` or ``bytes`` runs in the shell; a sequence runs directly.
        input: bytes written to the child's standard input, which is then closed
            (``b""`` gives an empty input, as in :func:`subprocess.run`).
        stdin: the child's standard input when *input* is not given; ``None`` shares
            the parent's. With ``PIPE``, :attr:`Process.stdin` is left open for the
            caller to write to (through *task_status*), as AnyIO does.
        stdout: ``PIPE`` (the default) collects the output into the result.
        stderr: ``PIPE`` (the default) collects it; ``STDOUT`` merges it into stdout.
        check: raise :exc:`subprocess.CalledProcessError` for a non-zero exit code.
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
        timeout: seconds after which the child is stopped (by *cancel_policy*) and
            :exc:`subprocess.TimeoutExpired` is raised, carrying the output read so far.
        cancel_policy: how the child is stopped on cancellation or timeout.
        signal_tree: start the child in a new process group and signal the whole
            group, so that cancelling leaves none of its own children behind.
        task_status: with ``await task_group.start(run_process, ...)``, the caller gets
            the running :class:`Process` as soon as it has started.
        **popen_kwargs: passed on to :class:`subprocess.Popen`.

    Returns:
        The exit code and, for the streams opened with ``PIPE``, the collected bytes
        (``None`` for the others).

    Raises:
        subprocess.CalledProcessError: if *check* is true and the exit code is not 0;
            it carries the collected output.
        subprocess.TimeoutExpired: if *timeout* expired.
        FileNotFoundError: if the executable does not exist.
        TypeError: for an argument of the wrong type.
        ValueError: for conflicting options, such as both *input* and *stdin*.
    """
    if (
        type(command) is list
        and input is None
        and stdin is None
        and timeout is None
        and not popen_kwargs
        and type(stdout) is int
        and stdout == PIPE
        and type(stderr) is int
        and stderr == PIPE
        and cwd is None
        and env is None
        and startupinfo is None
        and creationflags == 0
        and start_new_session is False
        and pass_fds == ()
        and user is None
        and group is None
        and extra_groups is None
        and umask == -1
        and signal_tree is False
        and task_status is TASK_STATUS_IGNORED
        and type(cancel_policy) is CancelPolicy
        and _communicate.AVAILABLE
        and not _open.DELEGATE
    ):
        # The common case, on a path of its own that makes fewer objects and calls.
        result = await _run_piped(command, check, cancel_policy)
        if result is not None:
            return result
    if input is not None:
        if stdin is not None:
            raise ValueError("stdin and input arguments may not both be used")
        if not isinstance(input, (bytes, bytearray, memoryview)):
            raise TypeError(
                f"input must be bytes, not {type(input).__name__}"
                + ("; encode the text first" if isinstance(input, str) else "")
            )
        stdin = PIPE
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise TypeError(f"timeout must be a number of seconds, not {type(timeout).__name__}")
        if math.isnan(timeout):
            raise ValueError("timeout must not be NaN")

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
    # No checkpoint between the spawn and the try block below: a cancellation there
    # would lose the child. Both ways of starting return right after spawning it.
    if _open.DELEGATE:
        process = await _open.start(command, checkpoint_if_cancelled, options)
    else:
        # (The same as _open.start(), without its two coroutine frames.)
        await checkpoint_if_cancelled()
        process = start_posix(command, options)
    outputs: Outputs = [
        (stream, []) for stream in (process.stdout, process.stderr) if stream is not None
    ]
    try:
        task_status.started(process)
        timed_out = False
        if timeout is None:
            await _exchange(process, input, outputs)
        else:
            with CancelScope(deadline=current_time() + timeout) as timeout_scope:
                await _exchange(process, input, outputs)
            timed_out = timeout_scope.cancelled_caught
        if timed_out:
            with CancelScope(shield=True):
                await _stop_collecting(process, outputs)
        elif process.returncode is None or not process._close_now():
            # (Reaped and drained, the pipes close without a trip through the event loop.)
            await process.aclose()
    except BaseException as exc:
        with CancelScope(shield=True):
            await _stop_collecting(process, outputs)
        interrupt = lone_interrupt(exc)
        if interrupt is not None and interrupt is not exc:
            # Raised as the one-task path raises it, where ``except KeyboardInterrupt``
            # catches it, and not wrapped in the exception group of the tasks above.
            raise interrupt from None
        raise

    collected = {id(stream): b"".join(chunks) for stream, chunks in outputs}
    stdout_bytes = None if process.stdout is None else collected[id(process.stdout)]
    stderr_bytes = None if process.stderr is None else collected[id(process.stderr)]
    if timed_out:
        raise TimeoutExpired(command, timeout or 0.0, output=stdout_bytes, stderr=stderr_bytes)
    returncode = process.returncode
    assert returncode is not None  # aclose() reaped it
    if check and returncode != 0:
        raise CalledProcessError(returncode, command, stdout_bytes, stderr_bytes)
    return CompletedProcess(command, returncode, stdout_bytes, stderr_bytes)
