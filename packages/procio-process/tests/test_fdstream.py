"""FdHolder: the one owner of a non-blocking fd under every pipe user in procio."""

from __future__ import annotations

import os

import anyio
import anyio.lowlevel
import pytest
from procio_process._fdstream import FdHolder, set_pipe_size


def test_closes_once_and_reports_closed_afterwards() -> None:
    read_fd, write_fd = os.pipe()
    holder = FdHolder(read_fd)
    seen: list[int] = []

    def on_close(fd: int) -> None:
        os.fstat(fd)  # still open while the watcher lets go of it
        seen.append(fd)

    holder.on_close = on_close
    holder.close()
    holder.close()
    assert seen == [read_fd]
    assert holder.fd == -1
    assert holder.closed
    with pytest.raises(OSError):
        os.fstat(read_fd)
    with pytest.raises(anyio.ClosedResourceError):
        holder.read(10)
    with pytest.raises(anyio.ClosedResourceError):
        holder.readinto(bytearray(10))
    os.close(write_fd)


def test_non_blocking_calls_and_end_of_file() -> None:
    read_fd, write_fd = os.pipe()
    reader, writer = FdHolder(read_fd), FdHolder(write_fd)
    assert reader.read(10) is None  # would block
    assert writer.writev([b"ab", memoryview(b"cd")]) == 4
    buffer = bytearray(3)
    assert reader.readinto(buffer) == 3
    assert buffer == b"abc"
    assert reader.read(10) == b"d"
    # Fill the pipe: a write that would block says so instead of blocking.
    while writer.write(b"x" * 65536) is not None:
        pass
    writer.close()
    while (data := reader.read(65536)) != b"":
        assert data is not None
    reader.close()


def test_error_map() -> None:
    read_fd, write_fd = os.pipe()
    writer = FdHolder(write_fd)
    os.close(read_fd)
    with pytest.raises(anyio.BrokenResourceError) as broken:
        writer.write(b"x")
    assert isinstance(broken.value.__cause__, BrokenPipeError)
    # Closed behind the holder's back: EBADF is a closed resource, not a broken one.
    os.close(write_fd)
    with pytest.raises(anyio.ClosedResourceError):
        writer.write(b"x")
    writer.fd = -1  # it is gone already; do not close a number that may be reused


@pytest.mark.anyio
async def test_close_wakes_a_waiting_task() -> None:
    read_fd, write_fd = os.pipe()
    holder = FdHolder(read_fd)
    outcome: list[str] = []

    async def waiter() -> None:
        try:
            await holder.wait_readable()
        except anyio.ClosedResourceError:
            outcome.append("closed")

    with anyio.fail_after(20):
        async with anyio.create_task_group() as tg:
            tg.start_soon(waiter)
            for _ in range(5):
                await anyio.lowlevel.checkpoint()
            holder.close()
    assert outcome == ["closed"]
    os.close(write_fd)
    with pytest.raises(anyio.ClosedResourceError):
        await holder.wait_writable()


def test_set_pipe_size() -> None:
    fcntl = pytest.importorskip("fcntl")
    if not hasattr(fcntl, "F_GETPIPE_SZ"):
        pytest.skip("only Linux resizes pipes")
    read_fd, write_fd = os.pipe()
    try:
        assert set_pipe_size(write_fd, 1 << 18)
        assert fcntl.fcntl(read_fd, fcntl.F_GETPIPE_SZ) == 1 << 18
    finally:
        os.close(read_fd)
        os.close(write_fd)
    # Refused (here: the fd is gone): reported, not raised.
    assert not set_pipe_size(write_fd, 1 << 18)
