"""A large send through a pipe that never fills still lets the event loop run.

A child that reads as fast as its parent writes keeps the pipe from filling, and a send
that never has to wait would hold the event loop until its last byte: for hundreds of
megabytes, a long stall of every other task. These tests stand in for such a child
with a write that always takes its bytes, so that what happens is deterministic.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import anyio
import anyio.lowlevel
import pytest
from procio_process._fdstream import TURN_BYTES, FdHolder
from procio_process._streams import PipeSendStream

pytestmark = pytest.mark.anyio

#: The most one write of the stand-in child's pipe takes (a default pipe's worth).
PIECE = 65536
#: What a send may write between two turns of another task: a turn comes once a write
#: takes the bytes since the last one to TURN_BYTES or more. Trio runs the tasks of one
#: pass in random order, so one task may see the send take two turns between two of its
#: own (the send's first before it in one pass, its second after it in the next).
MOST_BETWEEN_TURNS = 2 * (TURN_BYTES + PIECE)


class _Counter:
    written = 0


@pytest.fixture
def stream(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[PipeSendStream, _Counter]]:
    read_fd, write_fd = os.pipe()
    sent = PipeSendStream(write_fd)
    counter = _Counter()
    real_write = FdHolder.write

    def always_takes(self: FdHolder, data: memoryview) -> int | None:
        if self.fd != write_fd:
            return real_write(self, data)
        count = min(len(data), PIECE)
        counter.written += count
        return count

    monkeypatch.setattr(FdHolder, "write", always_takes)
    try:
        yield sent, counter
    finally:
        sent.close()
        os.close(read_fd)


async def test_a_large_send_to_a_child_that_keeps_pace_leaves_other_tasks_their_turns(
    stream: tuple[PipeSendStream, _Counter],
) -> None:
    sent, counter = stream
    item = bytes(256 << 20)
    longest = 0
    done = False

    started = anyio.Event()

    async def other_task() -> None:
        nonlocal longest
        seen = counter.written
        started.set()
        while not done:
            await anyio.lowlevel.checkpoint()
            longest = max(longest, counter.written - seen)
            seen = counter.written

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            tg.start_soon(other_task)
            await started.wait()
            await sent.send(item)
            done = True
    assert counter.written == len(item)
    assert longest <= MOST_BETWEEN_TURNS, f"{longest >> 20} MiB written with the loop held"


async def test_a_send_cancelled_during_its_turn_goes_on_to_its_end(
    stream: tuple[PipeSendStream, _Counter],
) -> None:
    # The turn is no cancellation point: a send that has begun ends only by a wait for
    # the pipe (or an error), never with bytes cut short at a turn.
    sent, counter = stream
    item = bytes(16 << 20)
    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:

            async def cancel_at_first_turn() -> None:
                while counter.written == 0:
                    await anyio.lowlevel.checkpoint()
                tg.cancel_scope.cancel()

            tg.start_soon(cancel_at_first_turn)
            await anyio.lowlevel.checkpoint()
            await sent.send(item)
    assert counter.written == len(item)
