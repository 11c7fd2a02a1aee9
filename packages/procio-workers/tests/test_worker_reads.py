"""How the worker program reads its requests, however the pipe cuts them up.

A whole CALL of one segment, the usual request, is taken straight from the worker's first
read; everything else (a frame cut short, several frames in one read, a frame over the
limit or with unknown flags) goes through the frame reader. These tests feed the worker
raw bytes over its pipes, as a parent could, and check what comes back.
"""

from __future__ import annotations

import copy
import os
import time
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import PickleSerializer, WorkerPool, _wire
from procio_workers.testing import _session, python_worker_command

if TYPE_CHECKING:
    from procio_workers.testing import _Session

    from tests import procio_reads_testfuncs as rfuncs
else:
    import procio_reads_testfuncs as rfuncs

SERIALIZER = PickleSerializer()
TIMEOUT = 20.0


def _call_bytes(value: object) -> bytes:
    """The bytes of a CALL of ``copy.copy(value)``, which answers *value*."""
    buffers = _wire.encode_frame(_wire.CALL, SERIALIZER.dump_call(copy.copy, (value,)))
    return b"".join(bytes(memoryview(buffer)) for buffer in buffers)


def _reply(session: _Session) -> object:
    frame = session.expect(_wire.RESULT)
    return SERIALIZER.load_reply([memoryview(segment) for segment in frame.segments])


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def test_a_call_cut_into_many_writes_is_answered() -> None:
    data = _call_bytes("cut up")
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        # A byte at a time through the header (the worker may read a few bytes of it
        # only), then the rest in two pieces.
        for index in range(14):
            os.write(session.request, data[index : index + 1])
            time.sleep(0.002)
        os.write(session.request, data[14:20])
        time.sleep(0.002)
        os.write(session.request, data[20:])
        assert _reply(session) == "cut up"
        # The reader is back to a clean start: the next whole call is answered too.
        os.write(session.request, _call_bytes("after"))
        assert _reply(session) == "after"


def test_calls_that_arrive_together_are_all_answered_in_order() -> None:
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, b"".join(_call_bytes(n) for n in range(5)))
        assert [_reply(session) for _ in range(5)] == [0, 1, 2, 3, 4]
        os.write(session.request, _call_bytes(5))
        assert _reply(session) == 5


def test_a_call_and_the_rest_of_the_next_one_in_one_read() -> None:
    first, second = _call_bytes("first"), _call_bytes("second")
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, first + second[:7])
        assert _reply(session) == "first"
        time.sleep(0.01)
        os.write(session.request, second[7:])
        assert _reply(session) == "second"


def test_a_call_then_shutdown_in_one_write_is_answered_before_the_exit() -> None:
    shutdown = b"".join(bytes(b) for b in _wire.encode_frame(_wire.SHUTDOWN, []))
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, _call_bytes("last") + shutdown)
        assert _reply(session) == "last"
        assert session.receive() is None
        assert session.wait() == 0


def test_a_call_larger_than_the_first_read_is_answered() -> None:
    # Well over the worker's first read (64 KiB), in band: one segment.
    value = "x" * (300 * 1024)
    data = _call_bytes(value)
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        _write_all(session.request, data)
        assert _reply(session) == value
        os.write(session.request, _call_bytes("small"))
        assert _reply(session) == "small"


def test_a_whole_call_over_the_frame_limit_ends_the_worker() -> None:
    data = _call_bytes("y" * 2000)  # one read, but over the 1024-byte limit
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle", max_frame_length=1024)
        os.write(session.request, _call_bytes("fits"))
        assert _reply(session) == "fits"
        os.write(session.request, data)
        assert session.receive() is None, "no answer to a frame over the limit"
        assert session.wait() == _wire.EXIT_PROTOCOL_ERROR


@pytest.mark.parametrize("flags", [1, 0x80])
def test_a_whole_call_with_unknown_flags_ends_the_worker(flags: int) -> None:
    data = bytearray(_call_bytes("flagged"))
    data[1] = flags
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, bytes(data))
        assert session.receive() is None, "no answer to a frame with unknown flags"
        assert session.wait() == _wire.EXIT_PROTOCOL_ERROR


def test_a_call_whose_length_says_more_than_came_waits_for_the_rest() -> None:
    data = _call_bytes("patience")
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, data[:-1])
        time.sleep(0.05)
        assert session.process.poll() is None, "the worker must wait for the rest"
        os.write(session.request, data[-1:])
        assert _reply(session) == "patience"


@pytest.mark.anyio
async def test_a_worker_that_does_not_poll_sleeps_without_reading_first() -> None:
    # With idle polling off, a worker waits for the next call before it reads: every
    # read of the request pipe finds a call (no read that comes back empty).
    with anyio.fail_after(30):
        async with WorkerPool(1, idle_poll=0) as pool:
            await pool.run_sync(rfuncs.count_failed_reads)
            for i in range(20):
                await anyio.sleep(0.005)
                assert await pool.run_sync(copy.copy, i) == i
            assert await pool.run_sync(rfuncs.failed_reads) == 0


def test_stray_stream_controls_between_calls_are_ignored() -> None:
    # MORE and CLOSE for a stream that has ended may still arrive; a call follows.
    more = b"".join(bytes(b) for b in _wire.encode_frame(_wire.MORE, []))
    close = b"".join(bytes(b) for b in _wire.encode_frame(_wire.CLOSE, []))
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, more + close + _call_bytes("still here"))
        assert _reply(session) == "still here"
        os.write(session.request, more)
        time.sleep(0.01)
        os.write(session.request, _call_bytes("and here"))
        assert _reply(session) == "and here"


@pytest.mark.parametrize("kind", [_wire.RESULT, _wire.INIT, _wire.ITEMS])
def test_a_message_a_worker_never_receives_ends_it(kind: int) -> None:
    with _session(python_worker_command(), TIMEOUT) as session:
        session.handshake("pickle")
        os.write(session.request, _call_bytes("before"))
        assert _reply(session) == "before"
        session.send(kind, [b"{}"])
        assert session.receive() is None
        assert session.wait() == _wire.EXIT_PROTOCOL_ERROR
        assert session.process.stderr is not None
        stderr = session.process.stderr.read()
    assert f"unexpected {_wire.KIND_NAMES[kind]} message".encode() in stderr


@pytest.mark.anyio
async def test_large_buffers_cross_both_ways_with_their_types_and_writable() -> None:
    size = 3 << 20
    data = bytes(range(256)) * (size // 256)
    values = [data, bytearray(data), memoryview(bytearray(data)).cast("I")]
    with anyio.fail_after(TIMEOUT):
        async with WorkerPool(max_workers=1) as pool:
            kinds, back_bytes, back_array, back_view = await pool.run_sync(
                rfuncs.flip_first, values
            )
            in_place = await pool.run_sync(rfuncs.reads_bytes_in_place)
    assert kinds == ["bytes", "bytearray", "memoryview"]
    assert (type(back_bytes), back_bytes) == (bytes, data)
    flipped = bytes([data[0] ^ 0xFF]) + data[1:]
    assert (type(back_array), back_array) == (bytearray, bytearray(flipped))
    assert (back_view.format, back_view.readonly) == ("I", False)
    assert back_view.tobytes() == flipped
    memoryview(back_view).cast("B")[0] = 0  # writable in the parent too
    assert values[1] == bytearray(data)  # what was sent is untouched
    # On CPython a worker on a built-in codec reads large bytes in place.
    assert in_place == (_wire._bytes_storage() is not None)
