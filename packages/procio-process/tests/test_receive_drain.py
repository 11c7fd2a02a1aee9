"""A receive whose first read is large goes on reading until the pipe is empty.

The child is played by the test: a patched :meth:`FdHolder.read` writes into the pipe
right after given reads, as a child writing while its parent reads would. What is pinned
down: which reads a receive makes and how large, what it returns, and that nothing read
is lost when a later read fails or is interrupted.
"""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
from procio_process import _streams, open_process
from procio_process._fdstream import FdHolder
from procio_process._streams import (
    MAX_READS,
    READ_ON_BYTES,
    READ_PIECE,
    STREAMING_READ,
    PipeReceiveStream,
)

pytestmark = pytest.mark.anyio

#: A first read this large marks the child as streaming.
LARGE = STREAMING_READ * 3


class Child:
    """The writing end of a test pipe, and a log of the reads the stream made."""

    def __init__(self, write_fd: int) -> None:
        self.write_fd = write_fd
        #: ``(asked, got)`` per read: got is None when the read would block.
        self.reads: list[tuple[int, int | None]] = []
        #: After the read of this index (from 0) returns, write these bytes (None: close
        #: the writing end).
        self.after_read: dict[int, bytes | None] = {}
        #: Make the read of this index raise this instead of reading.
        self.fail_read: dict[int, BaseException] = {}

    def write(self, data: bytes) -> None:
        # Non-blocking: a test that overfills the pipe fails instead of hanging.
        assert os.write(self.write_fd, data) == len(data)

    def close(self) -> None:
        if self.write_fd >= 0:
            os.close(self.write_fd)
            self.write_fd = -1


@pytest.fixture
def pipe(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PipeReceiveStream, Child]]:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    stream = PipeReceiveStream(read_fd)
    child = Child(write_fd)
    real_read = FdHolder.read

    def logged_read(self: FdHolder, max_bytes: int) -> bytes | None:
        index = len(child.reads)
        failure = child.fail_read.get(index)
        if failure is not None:
            child.reads.append((max_bytes, None))
            raise failure
        data = real_read(self, max_bytes)
        child.reads.append((max_bytes, None if data is None else len(data)))
        if index in child.after_read:
            more = child.after_read[index]
            if more is None:
                child.close()
            else:
                child.write(more)
        return data

    monkeypatch.setattr(FdHolder, "read", logged_read)
    # A stray CPU yield would let nothing happen here: make it visible instead.
    monkeypatch.setattr(_streams, "_yield_cpu", lambda: None, raising=False)
    try:
        yield stream, child
    finally:
        stream.close()
        child.close()


def pattern(size: int, start: int = 0) -> bytes:
    return bytes((start + index) % 251 for index in range(size))


async def test_a_large_first_read_reads_on_in_pieces_until_the_pipe_is_empty(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    first, second, third = pattern(LARGE), pattern(5000, 1), pattern(READ_PIECE + 100, 2)
    child.write(first)
    child.after_read = {0: second, 1: third}
    data = await stream.receive(1 << 20)
    assert data == first + second + third
    # The first read may take all it is allowed; the later ones take a piece each, and
    # the receive stops at the read that finds the pipe empty.
    assert child.reads == [
        (1 << 20, LARGE),
        (READ_PIECE, len(second)),
        (READ_PIECE, READ_PIECE),
        (READ_PIECE, 100),
        (READ_PIECE, None),
    ]
    # Nothing was left behind, in the stream or in the pipe.
    assert not stream._pieces
    with pytest.raises(BlockingIOError):
        os.read(stream.fileno(), 1)


async def test_a_small_first_read_returns_at_once(pipe: tuple[PipeReceiveStream, Child]) -> None:
    stream, child = pipe
    child.write(b"prompt> ")
    child.after_read = {0: b"more"}
    assert await stream.receive() == b"prompt> "
    assert child.reads == [(65536, 8)]  # no second read for an interactive child
    assert await stream.receive() == b"more"


@pytest.mark.parametrize("max_bytes", [LARGE + 1, LARGE + READ_PIECE - 1, 65536])
async def test_reading_on_never_exceeds_max_bytes(
    pipe: tuple[PipeReceiveStream, Child], max_bytes: int
) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    # The child keeps the pipe full: the receive must stop at max_bytes, not at empty.
    child.after_read = {index: pattern(READ_PIECE, index) for index in range(MAX_READS)}
    data = await stream.receive(max_bytes)
    assert len(data) == max_bytes
    assert all(asked <= READ_PIECE for asked, _ in child.reads[1:])
    assert sum(got or 0 for _, got in child.reads) == max_bytes
    rest = await stream.receive(1 << 20)
    expected = pattern(LARGE) + b"".join(pattern(READ_PIECE, index) for index in range(MAX_READS))
    assert data + rest == expected[: len(data) + len(rest)]


async def test_reading_on_stops_at_64_kib_whatever_max_bytes(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    child.after_read = {index: pattern(READ_PIECE, index) for index in range(MAX_READS)}
    data = await stream.receive(1 << 20)
    # A task that receives without pause reaches the event loop after as many bytes as
    # before reading on: one pipe's worth per receive.
    assert len(data) == READ_ON_BYTES == 65536
    expected = pattern(LARGE) + b"".join(pattern(READ_PIECE, index) for index in range(MAX_READS))
    assert data == expected[:READ_ON_BYTES]


async def test_a_first_read_of_64_kib_or_more_is_returned_alone(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    child.write(pattern(READ_ON_BYTES))
    child.after_read = {0: b"more"}
    assert await stream.receive(1 << 20) == pattern(READ_ON_BYTES)
    assert len(child.reads) == 1
    assert await stream.receive() == b"more"


async def test_reading_on_stops_after_max_reads(pipe: tuple[PipeReceiveStream, Child]) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    # A child that writes a few bytes after every read, faster than they are read.
    child.after_read = dict.fromkeys(range(4 * MAX_READS), b"ab")
    data = await stream.receive(1 << 20)
    assert len(child.reads) == MAX_READS
    assert data == pattern(LARGE) + b"ab" * (MAX_READS - 1)


async def test_end_of_file_while_reading_on_returns_the_data_then_ends(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    child.after_read = {0: b"tail", 1: None}  # the child writes a last piece and exits
    assert await stream.receive() == pattern(LARGE) + b"tail"
    # The read that met end of file left it to the next receive, which makes one read.
    assert child.reads[2] == (READ_PIECE, 0)
    with pytest.raises(anyio.EndOfStream):
        await stream.receive()
    assert child.reads[3:] == [(65536, 0)]


async def test_a_read_error_after_some_data_comes_after_that_data(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    error = OSError(5, "Input/output error")
    child.fail_read = {1: _broken(error)}
    assert await stream.receive() == pattern(LARGE)
    with pytest.raises(anyio.BrokenResourceError) as caught:
        await stream.receive()
    assert caught.value.__cause__ is error
    assert len(child.reads) == 2  # the error was raised without reading again
    # It was raised once: the stream goes on with what the pipe holds.
    child.write(b"after")
    assert await stream.receive() == b"after"


@pytest.mark.parametrize("interrupt", [KeyboardInterrupt, SystemExit])
async def test_interrupted_while_reading_on_loses_nothing(
    pipe: tuple[PipeReceiveStream, Child], interrupt: type[BaseException]
) -> None:
    stream, child = pipe
    first, second = pattern(LARGE), pattern(READ_PIECE, 3)
    child.write(first)
    child.after_read = {0: second, 1: b"third"}
    child.fail_read = {2: interrupt()}
    with pytest.raises(interrupt):
        await stream.receive()
    # What was read before the interruption comes first, split to fit max_bytes...
    assert await stream.receive(LARGE) == first
    assert await stream.receive(10) == second[:10]
    assert await stream.receive() == second[10:]
    # ...then what the pipe still holds.
    assert await stream.receive() == b"third"


async def test_closing_drops_what_an_interrupted_receive_left(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    child.after_read = {0: b"x"}
    child.fail_read = {1: KeyboardInterrupt()}
    with pytest.raises(KeyboardInterrupt):
        await stream.receive()
    await stream.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()


async def test_a_cancelled_receive_keeps_what_an_interrupted_one_left(
    pipe: tuple[PipeReceiveStream, Child],
) -> None:
    stream, child = pipe
    child.write(pattern(LARGE))
    child.fail_read = {1: KeyboardInterrupt()}
    with pytest.raises(KeyboardInterrupt):
        await stream.receive()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await stream.receive()
        pytest.fail("a cancelled receive returned")  # pragma: no cover
    assert scope.cancelled_caught
    assert await stream.receive() == pattern(LARGE)


async def test_a_fast_child_read_in_large_receives_arrives_intact_and_in_order() -> None:
    # Many small writes, so that the reader's later reads race the child's writes.
    program = (
        "import os, sys\n"
        "block = bytes(range(251))\n"
        "for index in range(4000):\n"
        "    os.write(1, block[index % 7 :] + block[: index % 7])\n"
    )
    received: list[bytes] = []
    with anyio.fail_after(30):
        async with await open_process(
            [sys.executable, "-c", program], stdin=None, stderr=None
        ) as process:
            assert process.stdout is not None
            async for chunk in process.stdout:
                assert 0 < len(chunk) <= 65536
                received.append(chunk)
    block = bytes(range(251))
    expected = b"".join(block[index % 7 :] + block[: index % 7] for index in range(4000))
    assert b"".join(received) == expected


async def test_another_task_runs_while_a_fast_child_keeps_the_pipe_full() -> None:
    ticks = 0
    receives = 0

    async def tick() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    ticks_seen: list[int] = []
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(tick)
            await anyio.lowlevel.checkpoint()
            async with await open_process(
                ["head", "-c", str(64 << 20), "/dev/zero"], stdin=None, stderr=None
            ) as process:
                assert process.stdout is not None
                async for _ in process.stdout:
                    receives += 1
                    if receives % 256 == 0:
                        ticks_seen.append(ticks)
            tg.cancel_scope.cancel()
    # The other task ran all along (every 256 receives at least once), not only once
    # the child was done.
    assert len(ticks_seen) >= 4
    assert all(later > earlier for earlier, later in itertools.pairwise(ticks_seen))


def _broken(error: OSError) -> BaseException:
    try:
        raise anyio.BrokenResourceError from error
    except anyio.BrokenResourceError as exc:
        return exc
