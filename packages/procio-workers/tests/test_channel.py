"""The worker's frame channel and output forwarder, on real pipes with no worker behind.

The test plays the worker: it reads what the channel sends from the request pipe's
other end and writes the worker's frames into the response pipe.
"""

from __future__ import annotations

import fcntl
import gc
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator

import anyio
import anyio.lowlevel
import pytest
from anyio import ClosedResourceError
from procio_process._fdstream import TURN_BYTES, FdHolder, set_pipe_size
from procio_workers import _wire
from procio_workers._channel import ChannelError, FrameChannel
from procio_workers._forwarder import OutputForwarder
from procio_workers._lifecycle import TRANSITIONS, WorkerLifecycle, WorkerState, WorkerStateError

if sys.platform == "win32":  # pragma: no cover
    pytest.skip("the worker pipes are POSIX pipes", allow_module_level=True)

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tests.procio_empty_reads import EmptyReads

    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs
    from procio_empty_reads import EmptyReads

pytestmark = pytest.mark.anyio


class _Pipes:
    """A channel, and the worker's ends of its pipes (closed by ``close``)."""

    def __init__(self, *, exited: bool = False, max_frame_length: int = 1 << 24) -> None:
        self.worker_reads, request_write = os.pipe()
        response_read, self.worker_writes = os.pipe()
        self.channel = FrameChannel(request_write, response_read, max_frame_length, lambda: exited)

    def close(self) -> None:
        self.channel.close()
        for fd in (self.worker_reads, self.worker_writes):
            if fd >= 0:
                os.close(fd)
        self.worker_reads = self.worker_writes = -1

    def close_worker_writes(self) -> None:
        os.close(self.worker_writes)
        self.worker_writes = -1

    def close_worker_reads(self) -> None:
        os.close(self.worker_reads)
        self.worker_reads = -1


@pytest.fixture
def pipes() -> Iterator[_Pipes]:
    guard = funcs.LeakGuard()
    made = _Pipes()
    try:
        yield made
    finally:
        made.close()
    guard.check()


def _frame(kind: int, segments: list[bytes]) -> bytes:
    return b"".join(bytes(part) for part in _wire.encode_frame(kind, segments))


async def _read_exactly(fd: int, size: int) -> bytes:
    os.set_blocking(fd, False)
    data = bytearray()
    while len(data) < size:
        await anyio.wait_readable(fd)
        try:
            data += os.read(fd, min(size - len(data), 4096))
        except BlockingIOError:
            continue
    return bytes(data)


async def test_a_frame_goes_out_whole_and_comes_back_whole(pipes: _Pipes) -> None:
    segments = [b"header", bytes(range(256)) * 300, b"", b"tail"]
    frame = _wire.encode_frame(_wire.RESULT, segments)
    expected = b"".join(bytes(part) for part in frame)
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def worker() -> None:
                got.append(await _read_exactly(pipes.worker_reads, len(expected)))

            tg.start_soon(worker)
            await pipes.channel.send(list(frame))
        assert got == [expected]

        def echo_in_pieces() -> None:
            # Seven bytes at a time: the reader puts the frame together from pieces.
            for start in range(0, len(expected), 7):
                os.write(pipes.worker_writes, expected[start : start + 7])

        async with anyio.create_task_group() as tg:
            tg.start_soon(anyio.to_thread.run_sync, echo_in_pieces)
            received = await pipes.channel.receive()
    assert received.kind == _wire.RESULT
    assert [bytes(segment) for segment in received.segments] == segments


async def test_frames_that_come_in_one_read_are_all_kept(pipes: _Pipes) -> None:
    os.write(
        pipes.worker_writes,
        _frame(_wire.ITEMS, [b"a"]) + _frame(_wire.ITEMS, [b"b"]) + _frame(_wire.END, []),
    )
    with anyio.fail_after(10):
        kinds = [(await pipes.channel.receive()).kind for _ in range(3)]
    assert kinds == [_wire.ITEMS, _wire.ITEMS, _wire.END]
    assert not pipes.channel.reader.frames


async def test_a_frame_larger_than_a_tiny_pipe_goes_out_in_order(pipes: _Pipes) -> None:
    # The smallest pipe the system gives (one page where it can be shrunk): the frame
    # goes out in many partial writes, each resumed where the last one stopped.
    set_pipe_size(pipes.channel.request.fd, 4096)
    payload = [os.urandom(3000) for _ in range(200)]
    frame = _wire.encode_frame(_wire.CALL, payload)
    expected = b"".join(bytes(part) for part in frame)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            got: list[bytes] = []

            async def slow_worker() -> None:
                data = bytearray()
                while len(data) < len(expected):
                    left = len(expected) - len(data)
                    data += await _read_exactly(pipes.worker_reads, min(1000, left))
                    await anyio.lowlevel.checkpoint()
                got.append(bytes(data))

            tg.start_soon(slow_worker)
            await pipes.channel.send(list(frame))
    assert got == [expected]


class _EndlessPipe:
    """Stands for a pipe whose other end keeps pace with any reader or writer: it never
    fills, nor runs dry while there is something to read, so no read or write has to
    wait. Each read or write moves up to a megabyte (a large pipe's worth). It keeps the
    real holder it stands for, and closes it with itself.
    """

    MOST = 1 << 20

    def __init__(self, real: FdHolder, data: bytes = b"") -> None:
        self.real = real
        self.fd = real.fd
        self.moved = 0
        self._data = memoryview(data)
        self._at = 0

    def writev(self, buffers: list[bytes]) -> int:
        count = min(sum(len(memoryview(buffer)) for buffer in buffers), self.MOST)
        self.moved += count
        return count

    def readinto(self, view: memoryview) -> int:
        count = min(len(view), self.MOST, len(self._data) - self._at)
        view[:count] = self._data[self._at : self._at + count]
        self._at += count
        self.moved += count
        return count

    def close(self) -> None:
        self.real.close()
        self.fd = -1


#: What a frame may move between two turns of another task: a turn comes once a move
#: takes the bytes since the last one to TURN_BYTES or more. Trio runs the tasks of one
#: pass in random order, so one task may see the frame take two turns between two of its
#: own (the frame's first before it in one pass, its second after it in the next).
MOST_BETWEEN_TURNS = 2 * (TURN_BYTES + _EndlessPipe.MOST)


async def _longest_stretch_between_turns(
    pipe: _EndlessPipe, move: Callable[[], Awaitable[object]]
) -> int:
    """Run *move* beside a task that takes every turn the event loop gives it: the most
    bytes *move* put through *pipe* between two of that task's turns."""
    longest = 0
    done = False

    started = anyio.Event()

    async def other_task() -> None:
        nonlocal longest
        seen = pipe.moved
        started.set()
        while not done:
            await anyio.lowlevel.checkpoint()
            longest = max(longest, pipe.moved - seen)
            seen = pipe.moved

    async with anyio.create_task_group() as tg:
        tg.start_soon(other_task)
        await started.wait()
        await move()
        done = True
    return longest


async def test_a_large_frame_sent_through_a_fast_pipe_leaves_other_tasks_their_turns(
    pipes: _Pipes,
) -> None:
    # A worker that reads as fast as the parent writes leaves the pipe never full, and
    # the send never waits: it must still let the event loop run its other tasks.
    pipe = _EndlessPipe(pipes.channel.request)
    pipes.channel.request = pipe  # type: ignore[assignment]
    frame = list(_wire.encode_frame(_wire.CALL, [b"head", bytes(64 << 20)]))
    with anyio.fail_after(20):
        longest = await _longest_stretch_between_turns(pipe, lambda: pipes.channel.send(frame))
    assert pipe.moved == sum(len(memoryview(part)) for part in frame)
    assert longest <= MOST_BETWEEN_TURNS, f"{longest >> 20} MiB sent with the loop held"


async def test_a_send_cancelled_during_its_turn_goes_on_to_its_end(pipes: _Pipes) -> None:
    # The turn is no cancellation point: a frame that has begun stops only at a wait for
    # the pipe (or an error), never cut short at a turn.
    pipe = _EndlessPipe(pipes.channel.request)
    pipes.channel.request = pipe  # type: ignore[assignment]
    frame = list(_wire.encode_frame(_wire.CALL, [b"head", bytes(16 << 20)]))
    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:

            async def cancel_at_first_turn() -> None:
                while pipe.moved == 0:
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_at_first_turn)
            await anyio.lowlevel.checkpoint()
            await pipes.channel.send(frame)
    assert pipe.moved == sum(len(memoryview(part)) for part in frame)


async def test_a_large_frame_received_from_a_fast_pipe_leaves_other_tasks_their_turns() -> None:
    payload = os.urandom(1 << 16) * 1024  # 64 MiB
    pipes = _Pipes(max_frame_length=1 << 27)
    try:
        pipe = _EndlessPipe(pipes.channel.response, _frame(_wire.RESULT, [b"head", payload]))
        pipes.channel.response = pipe  # type: ignore[assignment]
        received: list[_wire.Frame] = []

        async def receive() -> None:
            received.append(await pipes.channel.receive())

        with anyio.fail_after(20):
            longest = await _longest_stretch_between_turns(pipe, receive)
    finally:
        pipes.close()
    assert [bytes(segment) for segment in received[0].segments] == [b"head", payload]
    assert longest <= MOST_BETWEEN_TURNS, f"{longest >> 20} MiB read with the loop held"


async def test_a_worker_closing_its_end_mid_frame_is_a_typed_error(pipes: _Pipes) -> None:
    whole = _frame(_wire.RESULT, [b"x" * 1000])
    os.write(pipes.worker_writes, whole[:500])
    pipes.close_worker_writes()
    with anyio.fail_after(10), pytest.raises(ChannelError) as caught:
        await pipes.channel.receive()
    assert caught.value.reason == "the stream ended in the middle of a frame"


async def test_a_worker_closing_its_end_between_frames_is_end_of_file(pipes: _Pipes) -> None:
    pipes.close_worker_writes()
    with anyio.fail_after(10), pytest.raises(ChannelError) as caught:
        await pipes.channel.receive()
    assert caught.value.reason == "the worker closed its end of the protocol"


async def test_a_malformed_frame_is_a_typed_error(pipes: _Pipes) -> None:
    os.write(pipes.worker_writes, b"\xff" * 64)
    with anyio.fail_after(10), pytest.raises(ChannelError):
        await pipes.channel.receive()


async def test_a_worker_gone_before_the_first_byte_never_saw_the_frame(pipes: _Pipes) -> None:
    pipes.close_worker_reads()
    with anyio.fail_after(10), pytest.raises(ChannelError) as caught:
        await pipes.channel.send(list(_wire.encode_frame(_wire.CALL, [b"x"])))
    assert not caught.value.sent
    assert "BrokenPipeError" in caught.value.reason


async def test_a_worker_gone_mid_frame_had_part_of_it(pipes: _Pipes) -> None:
    set_pipe_size(pipes.channel.request.fd, 4096)
    frame = _wire.encode_frame(_wire.CALL, [b"y" * (1 << 20)])
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def worker_reads_a_little_and_goes() -> None:
                await _read_exactly(pipes.worker_reads, 100)
                pipes.close_worker_reads()

            tg.start_soon(worker_reads_a_little_and_goes)
            with pytest.raises(ChannelError) as caught:
                await pipes.channel.send(list(frame))
    assert caught.value.sent
    assert "could not send to the worker" in caught.value.reason


async def test_closing_the_channel_wakes_a_receive_and_a_send(pipes: _Pipes) -> None:
    set_pipe_size(pipes.channel.request.fd, 4096)
    errors: list[ChannelError] = []
    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:

            async def receive() -> None:
                with pytest.raises(ChannelError) as caught:
                    await pipes.channel.receive()
                errors.append(caught.value)

            async def send() -> None:
                with pytest.raises(ChannelError) as caught:
                    await pipes.channel.send([b"z" * (1 << 20)])
                errors.append(caught.value)

            tg.start_soon(receive)
            tg.start_soon(send)
            await anyio.wait_all_tasks_blocked()
            pipes.channel.close()
    reasons = sorted(error.reason for error in errors)
    assert reasons == [
        "could not read from the worker (ClosedResourceError())",
        "the pool closed during the call",
    ]


async def test_an_exit_of_the_worker_wakes_a_waiting_receive() -> None:
    guard = funcs.LeakGuard()
    pipes = _Pipes(exited=True)
    try:
        with anyio.fail_after(10):
            async with anyio.create_task_group() as tg:

                async def receive() -> None:
                    with pytest.raises(ChannelError, match="exited before it answered"):
                        await pipes.channel.receive()

                tg.start_soon(receive)
                await anyio.wait_all_tasks_blocked()
                # A fork of the worker still holds the pipes: no end of file comes.
                pipes.channel.peer_exited()
            # And later calls fail at once instead of waiting.
            with pytest.raises(ChannelError, match="exited before it answered"):
                await pipes.channel.receive()
    finally:
        pipes.close()
    guard.check()


async def test_a_closed_channel_says_closed_and_holds_no_descriptor(pipes: _Pipes) -> None:
    request, response = pipes.channel.request, pipes.channel.response
    fds = (request.fd, response.fd)
    pipes.channel.close()
    pipes.channel.close()  # idempotent
    assert (request.fd, response.fd) == (-1, -1)
    for fd in fds:
        with pytest.raises(OSError):
            os.fstat(fd)
    with pytest.raises(ClosedResourceError):
        request.write(b"x")
    with pytest.raises(ClosedResourceError):
        response.readinto(bytearray(10))
    with pytest.raises(ChannelError) as caught:
        await pipes.channel.send([b"x"])
    assert not caught.value.sent
    with pytest.raises(ChannelError, match="could not read"):
        await pipes.channel.receive()


async def test_a_descriptor_closed_behind_the_channel_is_closed_resource(pipes: _Pipes) -> None:
    # EBADF from the system (the fd was closed by someone else) maps to the closed error.
    fd = pipes.channel.request.fd
    os.close(fd)
    try:
        with pytest.raises(ClosedResourceError):
            pipes.channel.request.write(b"x")
    finally:
        pipes.channel.request.fd = -1  # nothing of ours to close any more


def test_a_channel_dropped_without_closing_closes_its_descriptors() -> None:
    guard = funcs.LeakGuard()
    pipes = _Pipes()
    pipes.close_worker_reads()
    pipes.close_worker_writes()
    del pipes
    gc.collect()
    guard.check()


# -- the response pipe, kept registered with an asyncio loop between waits -------------


async def _receive_after_a_wait(pipes: _Pipes, kind: int = _wire.RESULT) -> None:
    """Receive one frame that arrives only once the receive waits for it."""
    async with anyio.create_task_group() as tg:
        got: list[int] = []

        async def receive() -> None:
            got.append((await pipes.channel.receive()).kind)

        tg.start_soon(receive)
        await anyio.wait_all_tasks_blocked()
        os.write(pipes.worker_writes, _frame(kind, [b"x"]))
    assert got == [kind]


async def _check_fd_number_is_free_for_the_loop(number: int) -> None:
    """Give a new pipe's read end fd *number*, and wait on it through AnyIO.

    The loop must treat it as a new fd: a stale registration of an old fd of that
    number (with its callback) would break the wait.
    """
    write = _pipe_at(number)
    try:
        os.write(write, b"!")
        await _readable_through_anyio(number)
        assert os.read(number, 10) == b"!"
    finally:
        os.close(write)
        os.close(number)


def _pipe_at(number: int) -> int:
    """Make a pipe whose read end is fd *number* (free now); return its write end."""
    read, write = os.pipe()
    if write == number:
        moved = fcntl.fcntl(write, fcntl.F_DUPFD_CLOEXEC, number + 1)
        os.close(write)
        write = moved
    if read != number:
        os.dup2(read, number)
        os.close(read)
    return write


async def _readable_through_anyio(fd: int) -> None:
    """A pipe whose read end is *fd* is waited on by AnyIO, as any library would."""
    with anyio.fail_after(5):
        await anyio.wait_readable(fd)


async def test_a_closed_channel_leaves_nothing_registered_for_its_fd_number(
    pipes: _Pipes,
) -> None:
    with anyio.fail_after(10):
        for _ in range(3):  # waits that leave the fd registered between them
            await _receive_after_a_wait(pipes)
    number = pipes.channel.response.fd
    pipes.channel.close()
    await _check_fd_number_is_free_for_the_loop(number)


async def test_a_channel_dropped_after_a_wait_frees_its_fd_number() -> None:
    guard = funcs.LeakGuard()
    pipes = _Pipes()
    with anyio.fail_after(10):
        await _receive_after_a_wait(pipes)
    number = pipes.channel.response.fd
    pipes.close_worker_reads()
    pipes.close_worker_writes()
    del pipes
    gc.collect()
    guard.check()  # the loop's registration kept neither the holder nor its fd alive
    await _check_fd_number_is_free_for_the_loop(number)


async def test_a_second_waiter_is_refused_and_the_first_still_gets_its_frame(
    pipes: _Pipes,
) -> None:
    with anyio.fail_after(10):
        await _receive_after_a_wait(pipes)  # registered from here on (on asyncio)
        async with anyio.create_task_group() as tg:
            got: list[int] = []

            async def receive() -> None:
                got.append((await pipes.channel.receive()).kind)

            tg.start_soon(receive)
            await anyio.wait_all_tasks_blocked()
            with pytest.raises(anyio.BusyResourceError):
                await pipes.channel.response.wait_readable()
            os.write(pipes.worker_writes, _frame(_wire.END, []))
    assert got == [_wire.END]


async def test_bytes_nobody_waits_for_do_not_keep_the_loop_busy(
    pipes: _Pipes, monkeypatch: pytest.MonkeyPatch
) -> None:
    from procio_workers import _channel

    calls = 0
    original = _channel._pipe_readable

    def counted(ref: object) -> None:
        nonlocal calls
        calls += 1
        original(ref)  # type: ignore[arg-type]

    monkeypatch.setattr(_channel, "_pipe_readable", counted)
    with anyio.fail_after(10):
        await _receive_after_a_wait(pipes)
        with anyio.move_on_after(0.05):  # a wait given up: the fd stays registered
            await pipes.channel.receive()
        calls = 0
        # Bytes arrive with no task waiting for them; the loop goes round many times.
        os.write(pipes.worker_writes, _frame(_wire.END, []))
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        await anyio.sleep(0.01)
        for _ in range(50):
            await anyio.lowlevel.checkpoint()
        # At most once: the first time finds nobody waiting and lets go of the fd.
        assert calls <= 1
        assert (await pipes.channel.receive()).kind == _wire.END
        await _receive_after_a_wait(pipes)  # and a later wait registers it again


async def test_replies_waited_for_one_after_another_keep_the_fd_registered(
    pipes: _Pipes, anyio_backend_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The loop polls again before the task woken by a reply has read it, and finds the
    # pipe readable once more. Once the task has read, that report is stale: it must
    # not take the fd off the loop, only for the next wait to put it back (two
    # epoll_ctl calls per reply, the cost the holder exists to save).
    if anyio_backend_name == "trio":
        pytest.skip("Trio waits through AnyIO: no registration is kept between waits")
    from procio_workers import _channel

    unregistered = 0
    original = _channel._ResponsePipe._unregister

    def counted(self: _channel._ResponsePipe) -> None:
        nonlocal unregistered
        if self._loop is not None:
            unregistered += 1
        original(self)

    monkeypatch.setattr(_channel._ResponsePipe, "_unregister", counted)
    with anyio.fail_after(10):
        for _ in range(5):
            await _receive_after_a_wait(pipes)
            for _ in range(3):  # the loop's next passes, and what they report
                await anyio.lowlevel.checkpoint()
    assert unregistered == 0
    assert pipes.channel.response._loop is not None


async def test_a_stale_report_does_not_wake_the_next_wait(
    pipes: _Pipes, empty_reads: EmptyReads
) -> None:
    # A task that reads a reply and at once waits for the next one must sleep until
    # that one comes: the report of the first reply, stale by then, must not wake it
    # for a read that finds nothing.
    got: list[int] = []

    async def receive_two() -> None:
        for _ in range(2):
            got.append((await pipes.channel.receive()).kind)

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(receive_two)
            for count, kind in enumerate((_wire.RESULT, _wire.END)):
                while len(got) < count:  # the first reply read: the task waits again
                    await anyio.lowlevel.checkpoint()
                await anyio.wait_all_tasks_blocked()
                os.write(pipes.worker_writes, _frame(kind, [b"x"]))
    assert got == [_wire.RESULT, _wire.END]
    assert empty_reads.count == 2  # one read before each wait, none after a wake


def test_the_response_pipe_follows_the_caller_from_one_event_loop_to_the_next(
    anyio_backend_name: str, anyio_backend_options: dict[str, object]
) -> None:
    guard = funcs.LeakGuard()
    made = _Pipes()

    async def receive() -> None:
        with anyio.fail_after(10):
            await _receive_after_a_wait(made)

    try:
        for _ in range(3):  # each run a new loop; the last one was closed
            anyio.run(
                receive,
                backend=anyio_backend_name,
                backend_options=anyio_backend_options,
            )
    finally:
        made.close()
    guard.check()


# -- the output forwarder ---------------------------------------------------------------


def _child_with_outputs(script: str) -> tuple[subprocess.Popen[bytes], dict[int, int]]:
    out_read, out_write = os.pipe()
    err_read, err_write = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-c", script], stdout=out_write, stderr=err_write)
    finally:
        os.close(out_write)
        os.close(err_write)
    return child, {1: out_read, 2: err_read}


async def test_a_childs_output_is_forwarded_in_order() -> None:
    guard = funcs.LeakGuard()
    script = (
        "import os\n"
        "for i in range(3000):\n"
        "    os.write(1, b'out %d\\n' % i)\n"
        "    if i % 7 == 0: os.write(2, b'err %d\\n' % i)\n"
    )
    child, fds = _child_with_outputs(script)
    seen: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}
    forwarder = OutputForwarder(fds, lambda which, data: seen[which].extend(data))
    with anyio.fail_after(20):
        await forwarder.run()
    assert child.wait() == 0
    assert bytes(seen[1]) == b"".join(b"out %d\n" % i for i in range(3000))
    errors = [b"err %d\n" % i for i in range(3000) if i % 7 == 0]
    assert bytes(seen[2]) == b"".join(errors)
    assert forwarder.stderr_tail() == [line.decode().rstrip() for line in errors][-20:]
    assert forwarder.fds == {}
    guard.check()


async def test_a_handler_that_raises_loses_only_its_own_bytes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    child, fds = _child_with_outputs(
        "import os, time\nos.write(1, b'first')\ntime.sleep(0.2)\nos.write(1, b'second')\n"
    )
    seen: list[bytes] = []

    def handler(which: int, data: bytes) -> None:
        if not seen:
            seen.append(data)
            raise ValueError("handler trouble")
        seen.append(data)

    forwarder = OutputForwarder(fds, handler)
    with anyio.fail_after(20):
        await forwarder.run()
    child.wait()
    assert b"".join(seen) == b"firstsecond"
    assert "handler trouble" in caplog.text


async def test_a_grandchild_holding_the_pipes_does_not_hang_the_stop() -> None:
    guard = funcs.LeakGuard()
    # The child leaves a grandchild that inherited its stdout and stderr, and exits.
    child, fds = _child_with_outputs(
        "import subprocess, sys\np = subprocess.Popen(['sleep', '60'])\nprint(p.pid, flush=True)\n"
    )
    seen = bytearray()
    line = anyio.Event()

    def handler(which: int, data: bytes) -> None:
        seen.extend(data)
        if seen.endswith(b"\n"):
            line.set()

    forwarder = OutputForwarder(fds, handler)
    grandchild = 0
    try:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(forwarder.run)
                await line.wait()
                grandchild = int(seen)
                assert child.wait() == 0
                # No end of file comes while the grandchild lives: stopping ends it.
                forwarder.stop()
                await forwarder.wait_closed()
        assert forwarder.fds == {}
    finally:
        if grandchild:
            os.kill(grandchild, signal.SIGKILL)
    guard.check()


# -- the lifecycle ------------------------------------------------------------------------


class _Probe(WorkerLifecycle):
    def __init__(self, state: WorkerState) -> None:
        self._state = state


@pytest.mark.parametrize(
    ("state", "move"),
    [
        (WorkerState.STARTING, "_call_begins"),  # a call before the handshake ended
        (WorkerState.BUSY, "_call_begins"),  # a second call on a busy worker
        (WorkerState.IDLE, "_answered_now"),  # an answer nobody asked for
        (WorkerState.IDLE, "_started"),  # a second handshake
        (WorkerState.BROKEN, "_call_begins"),
        (WorkerState.BROKEN, "_answered_now"),
        (WorkerState.BROKEN, "_broke"),
        (WorkerState.CLOSED, "_call_begins"),
        (WorkerState.CLOSED, "_started"),
        (WorkerState.CLOSED, "_closed"),
        (WorkerState.IDLE, "_closed"),  # reaped without closing
    ],
)
def test_an_illegal_move_raises_and_leaves_the_state(state: WorkerState, move: str) -> None:
    probe = _Probe(state)
    with pytest.raises(WorkerStateError, match=state.value):
        getattr(probe, move)()
    assert probe.state is state


def test_a_worker_goes_round_its_life() -> None:
    probe = _Probe(WorkerState.STARTING)
    seen = []
    for move in ("_started", "_call_begins", "_answered_now", "_call_begins", "_broke"):
        getattr(probe, move)()
        seen.append(probe.state)
    probe._closing()
    probe._closing()  # a kill, then the close: both may come
    seen.append(probe.state)
    probe._closed()
    probe._closing()  # a kill after the close does nothing
    seen.append(probe.state)
    assert seen == [
        WorkerState.IDLE,
        WorkerState.BUSY,
        WorkerState.IDLE,
        WorkerState.BUSY,
        WorkerState.BROKEN,
        WorkerState.CLOSING,
        WorkerState.CLOSED,
    ]


def test_an_answer_or_a_failure_while_closing_leaves_the_worker_closing() -> None:
    probe = _Probe(WorkerState.CLOSING)
    probe._answered_now()
    probe._broke()
    assert probe.state is WorkerState.CLOSING


def test_only_a_busy_worker_becomes_idle_by_an_answer() -> None:
    assert {
        state for state, after in TRANSITIONS["answer"].items() if after is WorkerState.IDLE
    } == {WorkerState.BUSY}
    assert set(TRANSITIONS["call"]) == {WorkerState.IDLE}
