"""Feed a child's stdin, collect its stdout and stderr and wait for its exit in one task.

:func:`run_process` has up to four things to wait for at once: the child's exit, two
output pipes and the input pipe. One task per pipe (what AnyIO does) costs a task, a
cancel scope and a readiness registration each, which is most of the parent's CPU time
for a short command. On Linux all of them go into one private epoll instance instead;
an epoll file descriptor is itself readable when any of its members is ready, so the
event loop (asyncio, uvloop or Trio) watches a single fd through AnyIO's
``wait_readable`` and this task does the reads and writes itself. Where epoll is
missing, :func:`run_process` uses one task per pipe instead.
"""

from __future__ import annotations

import os
import select
import time
from collections.abc import Callable
from typing import TypeGuard

from anyio import BrokenResourceError, wait_readable

from ._fdstream import FdHolder
from ._posix import PosixProcess
from ._process import Process
from ._spawn import SpawnedChild
from ._streams import PipeReceiveStream

#: Whether :func:`communicate` can run here (else run_process uses tasks).
AVAILABLE = hasattr(select, "epoll")

_READ_SIZE = 65536
_WRITE_SIZE = 1 << 20
# System calls per pipe per wake-up: a child that writes (or reads) without pause must
# not keep this task from yielding to the event loop.
_CALLS_PER_WAKEUP = 16
# A child that exits closes its stdout, then its stderr, then becomes waitable, a few
# microseconds apart. Woken by the first of these, the task would go back to the event
# loop (and sleep, and be woken again) for each of the others. Once an output pipe has
# reached end of file, it polls the rest without waiting for up to this long instead:
# far less than a trip through the event loop and a wake-up, and a bound on how long a
# child that closes its output but runs on can hold the event loop.
_SETTLE_TIME = 100e-6


def can_communicate(process: Process) -> TypeGuard[PosixProcess]:
    """Whether :func:`communicate` can serve *process*."""
    return AVAILABLE and isinstance(process, PosixProcess) and process._exit_fd is not None


async def communicate(
    process: PosixProcess,
    input: bytes | bytearray | memoryview | None,
    outputs: list[tuple[PipeReceiveStream, list[bytes]]],
) -> None:
    """Write *input*, read each output stream into its list until EOF, and wait for exit.

    The caller may close any stream of *process* (or the process) meanwhile: the closed
    pipe is dropped from the poller before its fd is closed, what was read from it so
    far stays in its list, and this returns once the child has exited and the pipes
    still open have reached end of file. Cancellation leaves everything read so far in
    the lists and the child running.
    """
    exit_fd = process._exit_fd
    assert exit_fd is not None
    poller = select.epoll(4)
    # Act as the task watching the exit fd, so Process.wait() in other tasks waits for
    # this one instead of competing for the fd, and the exit fd stays open meanwhile.
    process._watching = True
    handlers: dict[int, Callable[[], bool]] = {}
    output_fds: set[int] = set()
    holders: list[FdHolder] = []

    def forget(fd: int) -> None:
        # A stream is closing its fd, maybe by the caller's hand: unregister it first,
        # since epoll keeps watching a closed fd whose pipe is still open elsewhere
        # (duplicated into a child forked meanwhile) and would wake this task forever.
        if handlers.pop(fd, None) is not None:
            poller.unregister(fd)

    def watch(holder: FdHolder, events: int, handler: Callable[[], bool]) -> None:
        poller.register(holder.fd, events)
        handlers[holder.fd] = handler
        holder.on_close = forget
        holders.append(holder)

    try:

        def watch_exit() -> bool:
            return process._popen.poll() is not None

        poller.register(exit_fd, select.EPOLLIN)
        handlers[exit_fd] = watch_exit
        for stream, chunks in outputs:
            if not stream.closed:
                output_fds.add(stream.fileno())
                watch(stream._holder, select.EPOLLIN, _reader(stream._holder, chunks))
        stdin = process._stdin
        stdin_fd = -1
        if input is not None and stdin is not None and not stdin.closed:
            stdin_fd = stdin.fileno()
            writer = _writer(stdin._holder, memoryview(input).cast("B"))
            if writer():
                stdin.close()
            else:
                watch(stdin._holder, select.EPOLLOUT, writer)

        def handle_ready() -> bool:
            """Serve the ready fds; return whether an output pipe reached end of file."""
            finished = False
            done: list[int] = []
            for fd, _events in poller.poll(0):
                handler = handlers.get(fd)
                if handler is not None and handler():
                    # Done: no more of its events; the input pipe is closed, so that
                    # the child sees the end of its input (and forget() unregisters
                    # it first).
                    if fd == stdin_fd:
                        assert stdin is not None
                        forget(fd)
                        stdin.close()
                    else:
                        del handlers[fd]
                        done.append(fd)
                    finished = finished or fd in output_fds
            if len(handlers) == 1 and exit_fd in handlers and watch_exit():
                # An exiting child closes its pipes just before it becomes waitable:
                # when the pipes are done, the exit has usually happened too.
                del handlers[exit_fd]
                done.append(exit_fd)
            if handlers:
                # More to wait for: stop watching the finished fds now (the caller
                # may close them meanwhile). Otherwise closing the poller, next,
                # drops them all without a system call each.
                for fd in done:
                    poller.unregister(fd)
            return finished

        while handlers:
            await wait_readable(poller.fileno())
            if handle_ready() and handlers:
                deadline = time.perf_counter() + _SETTLE_TIME
                while handlers and time.perf_counter() < deadline:
                    os.sched_yield()  # the exiting child may share this CPU
                    handle_ready()
    finally:
        for holder in holders:
            holder.on_close = None
        poller.close()
        process._stop_watching()


def _reader(holder: FdHolder, chunks: list[bytes]) -> Callable[[], bool]:
    def read() -> bool:
        for _ in range(_CALLS_PER_WAKEUP):
            data = holder.read(_READ_SIZE)
            if data is None:
                return False
            if not data:
                return True
            chunks.append(data)
        return False

    return read


def _writer(holder: FdHolder, data: memoryview) -> Callable[[], bool]:
    position = 0

    def write() -> bool:
        nonlocal position
        for _ in range(_CALLS_PER_WAKEUP):
            if position >= len(data):
                return True
            try:
                written = holder.write(data[position : position + _WRITE_SIZE])
            except BrokenResourceError:
                # The child stopped reading: like subprocess.run(), not an error; its
                # exit code tells whether something went wrong.
                return True
            if written is None:
                return False
            position += written
        return position >= len(data)

    return write


async def communicate_piped(
    child: SpawnedChild,
    exit_fd: int,
    stdout_fd: int,
    stderr_fd: int,
    stdout_chunks: list[bytes],
    stderr_chunks: list[bytes],
) -> None:
    """:func:`communicate` for a child of :func:`~procio_process._posix.start_piped`.

    Reads both pipes (each only when it is ready) into their lists until end of file
    and returns once the child is reaped too. Nobody else holds the descriptors (they
    were never handed out), which spares the bookkeeping :func:`communicate` needs for
    streams the caller may close meanwhile; the caller closes them afterwards.
    Cancellation leaves what was read so far in the lists and the child running.
    """
    poller = select.epoll(3)
    try:
        poller.register(exit_fd, select.EPOLLIN)
        poller.register(stdout_fd, select.EPOLLIN)
        poller.register(stderr_fd, select.EPOLLIN)
        # What is still awaited: each pipe's list, and None for the exit fd.
        pending: dict[int, list[bytes] | None] = {
            exit_fd: None,
            stdout_fd: stdout_chunks,
            stderr_fd: stderr_chunks,
        }
        while pending:
            await wait_readable(poller.fileno())
            if _serve_piped(poller, pending, child, exit_fd) and pending:
                # As in communicate(): the exit follows the end of the pipes closely.
                deadline = time.perf_counter() + _SETTLE_TIME
                while pending and time.perf_counter() < deadline:
                    os.sched_yield()
                    _serve_piped(poller, pending, child, exit_fd)
    finally:
        poller.close()


def _serve_piped(
    poller: select.epoll,
    pending: dict[int, list[bytes] | None],
    child: SpawnedChild,
    exit_fd: int,
) -> bool:
    """Serve the ready fds of :func:`communicate_piped`; whether a pipe reached its end.

    A pipe is read once per round, which does not block since it is ready (the fds may
    be blocking) and takes what it holds up to its usual capacity; a child that writes
    without pause is read for a bounded number of rounds, so that the caller goes back
    to the event loop now and then.
    """
    finished = False
    for _ in range(_CALLS_PER_WAKEUP):
        read_data = False
        for fd, _events in poller.poll(0):
            if fd not in pending:
                continue
            chunks = pending[fd]
            if chunks is None:
                if child.poll() is None:
                    continue
            else:
                data = os.read(fd, _READ_SIZE)
                if data:
                    chunks.append(data)
                    read_data = True
                    continue
                finished = True
            del pending[fd]
            if pending:
                # Else the poller is closed next, which drops every fd at once.
                poller.unregister(fd)
        if not read_data:
            break
    if len(pending) == 1 and exit_fd in pending and child.poll() is not None:
        # Both pipes are done, and the exit that closed them has already happened.
        del pending[exit_fd]
    return finished
