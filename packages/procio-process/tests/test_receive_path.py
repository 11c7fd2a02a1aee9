"""The receive path of PipeReceiveStream: when it waits for the pipe, and what it returns.

A receive that finds the pipe empty right after a large read (the child is streaming)
gives the CPU away once and reads again before it goes back to the event loop; a
stream that has been receiving small pieces (an interactive child) waits at once.
These tests stand in for the child with a pipe they write to themselves, from the
patched CPU yield, so that what happens is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
from procio_process import _streams, open_process
from procio_process._fdstream import FdHolder
from procio_process._streams import PipeReceiveStream

pytestmark = pytest.mark.anyio

BULK = 16384


@pytest.fixture
def pipe() -> Iterator[tuple[PipeReceiveStream, int]]:
    read_fd, write_fd = os.pipe()
    stream = PipeReceiveStream(read_fd)
    try:
        yield stream, write_fd
    finally:
        stream.close()
        os.close(write_fd)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record each time a receive goes to the event loop to wait for the pipe."""
    calls: list[int] = []
    wait_readable = FdHolder.wait_readable

    async def recording(self: FdHolder) -> None:
        calls.append(self.fd)
        await wait_readable(self)

    monkeypatch.setattr(FdHolder, "wait_readable", recording)
    return calls


async def test_a_streaming_reader_reads_again_after_yielding_before_it_waits(
    pipe: tuple[PipeReceiveStream, int], waits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, write_fd = pipe
    yields: list[str] = []

    def child_runs_meanwhile() -> None:
        # What the yield is for: the producer gets the CPU and writes.
        yields.append("yield")
        os.write(write_fd, b"more")

    monkeypatch.setattr(_streams, "_yield_cpu", child_runs_meanwhile, raising=False)
    os.write(write_fd, b"x" * BULK)
    assert await stream.receive() == b"x" * BULK
    assert yields == []  # the pipe was not empty: no yield
    with anyio.fail_after(10):
        assert await stream.receive() == b"more"
    assert yields == ["yield"]
    assert waits == []  # no trip through the event loop for data that came meanwhile


async def test_a_streaming_reader_waits_when_the_pipe_stays_empty(
    pipe: tuple[PipeReceiveStream, int], waits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, write_fd = pipe
    yields: list[str] = []
    monkeypatch.setattr(_streams, "_yield_cpu", lambda: yields.append("yield"), raising=False)
    os.write(write_fd, b"x" * BULK)
    assert await stream.receive() == b"x" * BULK

    async def write_later() -> None:
        while not waits:
            await anyio.lowlevel.checkpoint()
        os.write(write_fd, b"later")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_later)
            assert await stream.receive() == b"later"
    assert yields == ["yield"]  # one yield, then the wait, not a spin
    assert waits == [stream.fileno()]


async def test_an_interactive_reader_waits_without_yielding_first(
    pipe: tuple[PipeReceiveStream, int], waits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, write_fd = pipe
    yields: list[str] = []
    monkeypatch.setattr(_streams, "_yield_cpu", lambda: yields.append("yield"), raising=False)
    os.write(write_fd, b"prompt> ")
    assert await stream.receive() == b"prompt> "

    async def write_later() -> None:
        while not waits:
            await anyio.lowlevel.checkpoint()
        os.write(write_fd, b"answer\n")

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(write_later)
            assert await stream.receive() == b"answer\n"
    assert yields == []
    assert len(waits) == 1


async def test_cancelled_while_waiting_after_the_yield_loses_nothing(
    pipe: tuple[PipeReceiveStream, int], waits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, write_fd = pipe
    monkeypatch.setattr(_streams, "_yield_cpu", lambda: None, raising=False)
    os.write(write_fd, b"x" * BULK)
    assert await stream.receive() == b"x" * BULK
    with anyio.move_on_after(0.05) as scope:
        await stream.receive()
    assert scope.cancelled_caught
    assert len(waits) == 1
    os.write(write_fd, b"after")
    with anyio.fail_after(10):
        assert await stream.receive() == b"after"


async def test_end_of_file_right_after_a_large_read(monkeypatch: pytest.MonkeyPatch) -> None:
    yields: list[str] = []
    monkeypatch.setattr(_streams, "_yield_cpu", lambda: yields.append("yield"), raising=False)
    read_fd2, write_fd2 = os.pipe()
    other = PipeReceiveStream(read_fd2)
    try:
        os.write(write_fd2, b"y" * BULK)
        os.close(write_fd2)
        write_fd2 = -1
        assert await other.receive() == b"y" * BULK
        with pytest.raises(anyio.EndOfStream):
            await other.receive()
        assert yields == []  # end of file is not "would block"
    finally:
        other.close()
        if write_fd2 >= 0:
            os.close(write_fd2)


async def test_closed_by_another_task_while_waiting_after_a_large_read(
    pipe: tuple[PipeReceiveStream, int], waits: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    stream, write_fd = pipe
    monkeypatch.setattr(_streams, "_yield_cpu", lambda: None, raising=False)
    os.write(write_fd, b"x" * BULK)
    assert await stream.receive() == b"x" * BULK

    async def close_when_waiting() -> None:
        while not waits:
            await anyio.lowlevel.checkpoint()
        await stream.aclose()

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(close_when_waiting)
            with pytest.raises(anyio.ClosedResourceError):
                await stream.receive()
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()


@pytest.mark.parametrize("max_bytes", [1, 1000, 4095, 4096, 65535, 65537, 1 << 20])
async def test_receive_never_returns_more_than_max_bytes_from_a_fast_child(
    max_bytes: int,
) -> None:
    size = 300_007
    total = 0
    largest = 0
    command = ["head", "-c", str(size), "/dev/urandom"]
    with anyio.fail_after(30):
        async with await open_process(command, stdin=None, stderr=None) as process:
            stdout = process.stdout
            assert stdout is not None
            while True:
                try:
                    chunk = await stdout.receive(max_bytes)
                except anyio.EndOfStream:
                    break
                assert 0 < len(chunk) <= max_bytes
                largest = max(largest, len(chunk))
                total += len(chunk)
    assert total == size
    if max_bytes <= 4096:
        assert largest == max_bytes  # data was there: a receive takes what it may
