"""The frame format and the pickle codec, without any process."""

from __future__ import annotations

import copy
import pickle
import re
import struct
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procio_workers import _wire

if TYPE_CHECKING:
    from typing_extensions import Buffer


def _frame_bytes(kind: int, segments: list[bytes]) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in _wire.encode_frame(kind, segments))


segments_strategy = st.lists(st.binary(max_size=300), max_size=5)
kinds = st.sampled_from(sorted(_wire.KIND_NAMES))


@settings(max_examples=200, deadline=None)
@given(
    frames=st.lists(st.tuples(kinds, segments_strategy), min_size=1, max_size=6),
    data=st.data(),
)
def test_frames_decode_the_same_however_the_stream_is_split(
    frames: list[tuple[int, list[bytes]]], data: st.DataObject
) -> None:
    stream = b"".join(_frame_bytes(kind, segments) for kind, segments in frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    reader = _wire.FrameReader()
    start = 0
    for cut in [*cuts, len(stream)]:
        reader.feed(stream[start:cut])
        start = cut
    reader.eof()
    decoded = [(frame.kind, [bytes(s) for s in frame.segments]) for frame in reader.frames]
    assert decoded == frames


def _read_in_views(reader: _wire.FrameReader, stream: bytes, chunk: int) -> None:
    """Hand *stream* to *reader* as a receiver does: into its views, *chunk* at most at a time."""
    view = memoryview(stream)
    while view:
        target = reader.buffer()
        count = min(chunk, target.nbytes, view.nbytes)
        target[:count] = view[:count]
        reader.commit(count)
        view = view[count:]


@settings(max_examples=50, deadline=None)
@given(size=st.integers(0, 300_000), chunk=st.integers(1, 70_000))
def test_large_segments_read_straight_into_their_buffer_decode_intact(
    size: int, chunk: int
) -> None:
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    stream = _frame_bytes(_wire.RESULT, [b"head", payload]) + _frame_bytes(_wire.SHUTDOWN, [])
    reader = _wire.FrameReader()
    _read_in_views(reader, stream, chunk)
    assert [f.kind for f in reader.frames] == [_wire.RESULT, _wire.SHUTDOWN]
    assert bytes(reader.frames[0].segments[1]) == payload


def test_an_oversized_frame_is_refused_before_anything_is_allocated() -> None:
    reader = _wire.FrameReader(max_frame_length=1024)
    header = struct.pack(">BBH", _wire.RESULT, 0, 1) + struct.pack(">Q", 1 << 60)
    with pytest.raises(_wire.ProtocolError, match="exceeds the limit"):
        reader.feed(header)


def test_an_unknown_kind_is_a_protocol_error() -> None:
    with pytest.raises(_wire.ProtocolError, match="unknown message kind"):
        _wire.FrameReader().feed(b"\xee\x00\x00\x00")


def test_unknown_flags_are_a_protocol_error() -> None:
    with pytest.raises(_wire.ProtocolError, match="flags"):
        _wire.FrameReader().feed(struct.pack(">BBH", _wire.CALL, 1, 0))


def test_too_many_segments_are_a_protocol_error() -> None:
    with pytest.raises(_wire.ProtocolError, match="segments"):
        _wire.FrameReader().feed(struct.pack(">BBH", _wire.CALL, 0, _wire.MAX_SEGMENTS + 1))


def test_a_stream_cut_inside_a_frame_is_a_protocol_error() -> None:
    reader = _wire.FrameReader()
    reader.feed(_frame_bytes(_wire.CALL, [b"abcdef"])[:-2])
    assert not reader.frames
    with pytest.raises(_wire.ProtocolError, match="middle of a frame"):
        reader.eof()


def test_encode_refuses_more_segments_than_one_writev_carries() -> None:
    with pytest.raises(_wire.ProtocolError):
        _wire.encode_frame(_wire.CALL, [b""] * (_wire.MAX_SEGMENTS + 1))


def _round_trip(value: object, depth: int = 1) -> tuple[object, int]:
    codec = _wire.PickleCodec()
    segments = codec.dumps(value, depth)
    received = [bytearray(memoryview(s).cast("B")) for s in segments]
    return codec.loads(received), len(segments) - 1


BIG = _wire.OUT_OF_BAND_THRESHOLD


def test_large_bytes_travel_out_of_band_and_come_back_as_bytes() -> None:
    value = bytes(range(256)) * (BIG // 256 + 1)
    result, out_of_band = _round_trip(value)
    assert out_of_band == 1
    assert type(result) is bytes
    assert result == value


def test_large_bytes_in_call_arguments_travel_out_of_band() -> None:
    big = b"a" * BIG
    result, out_of_band = _round_trip((len, (big, [1], big + b"b")), depth=2)
    assert out_of_band == 2
    assert result == (len, (big, [1], big + b"b"))


PLAIN_VALUES = [
    5,
    -(2**70),
    2.5,
    1 + 2j,
    "text",
    True,
    None,
    b"small",
    bytearray(b"small"),
    (copy.copy, (1, "a", b"b", None)),
    (pow, [2, 10]),
    (len, ()),
    # Longer than the scan looks into before pickling: pickled first, and the pickle
    # kept if it is under the threshold, up to a frame, or pickled again past a frame.
    list(range(100)),
    (sum, (list(range(9000)),)),
    (sum, (list(range(30000)),)),
    tuple(str(i) * 40 for i in range(2000)),
    [(i, "x", None) for i in range(5000)],
]


def _value_id(value: object) -> str:
    """A test id that is the same in every run (a function's repr holds its address)."""
    text = re.sub(r" at 0x[0-9a-f]+", "", repr(value))
    return text if len(text) <= 60 else f"{text[:40]}...({len(text)} characters)"


@pytest.mark.parametrize("value", PLAIN_VALUES, ids=_value_id)
def test_plain_values_pickle_byte_for_byte_as_through_the_out_of_band_pickler(
    value: object,
) -> None:
    # The codec skips its own pickler for values it found plain; the stream must be the
    # one that pickler would have written.
    general = _wire.PickleCodec(_wire._make_pickler_class(pickle.Pickler))
    shortcut = [bytes(s) for s in _wire.PickleCodec().dumps(value, 2)]
    assert shortcut == [bytes(s) for s in general.dumps(value, 2)]
    assert _round_trip(value, 2) == (value, 0)


def test_buffers_beyond_the_quick_scan_still_travel_out_of_band() -> None:
    big = b"q" * BIG
    many = (*range(20), big)  # longer than the quick scan looks into
    result, out_of_band = _round_trip((len, many), depth=2)
    assert (result, out_of_band) == ((len, many), 1)
    # Under a frame, over one, and with the buffer first (the pickle then stops early).
    for value in ([*range(10_000), big], [*range(30_000), big], [big, *range(30_000)]):
        result, out_of_band = _round_trip(value)
        assert (result, out_of_band) == (value, 1)
    array = bytearray(big)
    result, out_of_band = _round_trip([*range(30), array])
    assert (result, out_of_band) == ([*range(30), array], 1)
    assert type(result[-1]) is bytearray  # type: ignore[index]
    view = memoryview(bytearray(b"v" * BIG))
    result, out_of_band = _round_trip((len, (view,)), depth=2)
    assert out_of_band == 1
    assert bytes(result[1][0]) == bytes(view)  # type: ignore[index]
    # A memoryview in a long list: the plain pickler refuses it, the general one sends it.
    small_view = memoryview(b"tiny")
    result, out_of_band = _round_trip([*range(30), small_view])
    assert out_of_band == 1
    assert bytes(result[-1]) == b"tiny"  # type: ignore[index]


def test_a_one_segment_frame_is_one_buffer_that_decodes_however_it_is_split() -> None:
    (encoded,) = _wire.encode_frame(_wire.RESULT, [b"payload"])
    buffer = bytes(encoded)
    assert buffer == struct.pack(">BBHQ", _wire.RESULT, 0, 1, 7) + b"payload"
    for cut in range(len(buffer) + 1):
        reader = _wire.FrameReader()
        reader.feed(buffer[:cut])
        reader.feed(buffer[cut:])
        assert [(f.kind, [bytes(s) for s in f.segments]) for f in reader.frames] == [
            (_wire.RESULT, [b"payload"])
        ]


def test_small_bytes_stay_in_band() -> None:
    result, out_of_band = _round_trip(b"small")
    assert (result, out_of_band) == (b"small", 0)


def test_a_large_bytearray_comes_back_as_the_received_buffer_itself() -> None:
    value = bytearray(b"z" * BIG)
    result, out_of_band = _round_trip(value)
    assert out_of_band == 1
    assert type(result) is bytearray
    assert result == value


def test_memoryviews_keep_their_format_shape_and_readonly_flag() -> None:
    base = memoryview(bytearray(range(24))).cast("i", [2, 3])
    result, out_of_band = _round_trip(base)
    assert out_of_band == 1
    assert isinstance(result, memoryview)
    assert (result.format, result.shape, result.readonly) == ("i", (2, 3), False)
    assert result.tolist() == base.tolist()
    readonly, _ = _round_trip(memoryview(b"q" * 10))
    assert isinstance(readonly, memoryview)
    assert readonly.readonly
    assert readonly.tobytes() == b"q" * 10


def test_lists_with_large_bytes_are_rebuilt_without_touching_the_original() -> None:
    big = b"m" * BIG
    original = [big, 1]
    result, out_of_band = _round_trip(original)
    assert out_of_band == 1
    assert result == [big, 1]
    assert original == [big, 1]


class _Thing:
    pass


def test_a_class_from_the_workers_main_resolves_to_the_parents_main(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import sys
    import types

    worker_main = types.ModuleType("__mp_main__")
    worker_main._Thing = _Thing  # type: ignore[attr-defined]
    monkeypatch.setattr(_Thing, "__module__", "__mp_main__")
    monkeypatch.setitem(sys.modules, "__mp_main__", worker_main)
    segments = _wire.PickleCodec().dumps(_Thing)
    monkeypatch.delitem(sys.modules, "__mp_main__")
    monkeypatch.setattr(sys.modules["__main__"], "_Thing", _Thing, raising=False)
    assert (
        _wire.PickleCodec().loads([bytearray(memoryview(s).cast("B")) for s in segments]) is _Thing
    )


@pytest.mark.skipif(
    not hasattr(sys, "getrefcount"), reason="reuse relies on CPython's reference counts"
)
def test_a_large_segment_buffer_is_reused_only_once_nobody_holds_it() -> None:
    size = 2 * 1024 * 1024
    frame = _frame_bytes(_wire.RESULT, [b"x" * size])
    reader = _wire.FrameReader()
    reader.feed(frame)
    held = reader.frames.popleft().segments[0]
    reader.feed(frame)
    second = reader.frames.popleft().segments[0]
    assert second is not held  # the first one is still in use
    second_id = id(second)
    del second
    reader.feed(frame)
    third = reader.frames.popleft().segments[0]
    assert id(third) == second_id  # released by its consumer: filled again
    assert bytes(third) == b"x" * size
    assert bytes(held) == b"x" * size
    assert third is not held


# --- large out-of-band segments read in place ---------------------------------------

MIB = 1 << 20
IN_PLACE = _wire._bytes_storage() is not None


def _through_reader(segments: Sequence[Buffer], chunk: int = 70_000) -> _wire.Frame:
    """Read one RESULT frame of *segments* as a receiver does: into the reader's views."""
    stream = b"".join(bytes(b) for b in _wire.encode_frame(_wire.RESULT, segments))
    reader = _wire.FrameReader()
    _read_in_views(reader, stream, chunk)
    (frame,) = reader.frames
    return frame


def test_large_bytes_are_handed_out_as_the_object_they_were_read_into() -> None:
    big = bytes(range(256)) * (2 * MIB // 256) + b"tail"
    codec = _wire.PickleCodec()
    frame = _through_reader(codec.dumps((len, (big, b"small")), 2))
    buffer = frame.segments[1]
    loaded: Any = codec.loads([memoryview(s) for s in frame.segments])
    func, (value, small) = loaded
    assert (func, type(value), value, small) == (len, bytes, big, b"small")
    if IN_PLACE:
        owner: Any = memoryview(buffer).obj
        assert value is owner.bytes_owner
        del owner
    del frame, buffer, func, loaded
    # Nothing else holds it: no cycle, no cache keeps a received payload alive.
    alone = bytearray(1)  # held by one name, as *value* should be now
    assert sys.getrefcount(value) == sys.getrefcount(alone)


def test_large_bytearrays_and_memoryviews_arrive_writable_and_intact() -> None:
    array = bytearray(b"a" * (2 * MIB))
    view = memoryview(bytearray(range(256)) * (2 * MIB // 256)).cast("i", [2, MIB // 4])
    codec = _wire.PickleCodec()
    frame = _through_reader(codec.dumps([array, view, bytes(array)], 1))
    loaded: Any = codec.loads(frame.segments)
    got_array, got_view, got_bytes = loaded
    assert type(got_array) is bytearray
    assert got_array == array
    got_array[0] = ord("b")  # writable, and its own: the bytes beside it do not change
    assert (got_bytes, type(got_bytes)) == (bytes(array), bytes)
    assert (got_view.format, got_view.shape, got_view.readonly) == ("i", (2, MIB // 4), False)
    assert got_view.tobytes() == view.tobytes()
    got_view[1, 0] = 7
    assert got_view[1, 0] == 7


def test_without_in_place_bytes_large_segments_are_bytearrays(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_wire, "_storage", None)
    monkeypatch.setattr(_wire, "_storage_tried", True)
    big = b"z" * (2 * MIB)
    codec = _wire.PickleCodec()
    frame = _through_reader(codec.dumps([big, bytearray(big)], 1))
    assert [type(s) for s in frame.segments[1:]] == [bytearray, bytearray]
    value: Any = codec.loads(frame.segments)
    assert value == [big, bytearray(big)]
    assert [type(v) for v in value] == [bytes, bytearray]


def test_a_reader_told_not_to_gives_bytearrays_to_a_codec_of_its_own() -> None:
    segments = _wire.PickleCodec().dumps([b"q" * (2 * MIB)], 1)
    stream = b"".join(bytes(b) for b in _wire.encode_frame(_wire.RESULT, segments))
    reader = _wire.FrameReader()
    reader.bytes_in_place = False
    reader.feed(stream)
    assert [type(s) for s in reader.frames[0].segments] == [bytearray, bytearray]


def test_bytes_storage_that_fails_its_probe_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    # A layout other than expected: writes through the view do not reach the object.
    def make(self: object, length: int) -> tuple[bytes, memoryview]:
        return bytes(length), memoryview(bytearray(length))

    monkeypatch.setattr(_wire._BytesStorage, "make", make)
    monkeypatch.setattr(_wire, "_storage", None)
    monkeypatch.setattr(_wire, "_storage_tried", False)
    assert _wire._bytes_storage() is None
    big = bytes(range(256)) * (2 * MIB // 256)
    frame = _through_reader(_wire.PickleCodec().dumps(big, 1))
    assert type(frame.segments[1]) is bytearray
    assert _wire.PickleCodec().loads(frame.segments) == big


@pytest.mark.skipif(not IN_PLACE, reason="bytes are read in place on CPython only")
def test_huge_pages_are_offered_only_inside_a_large_object(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    storage = _wire._bytes_storage()
    assert storage is not None
    advised: list[tuple[int, int, int]] = []

    def madvise(first: int, length: int, advice: int) -> int:
        advised.append((first, length, advice))
        return 0

    monkeypatch.setattr(storage, "_madvise", madvise)
    monkeypatch.setattr(storage, "_advice", 14)
    storage.make(_wire._HUGE_PAGES_MIN - 1)
    assert advised == []  # too small to be worth it
    size = _wire._HUGE_PAGES_MIN + 3 * MIB
    big, view = storage.make(size)
    ((first, length, advice),) = advised
    start = id(big) + bytes.__basicsize__ - 1
    assert first % _wire._HUGE_PAGE == 0
    assert length % _wire._HUGE_PAGE == 0
    assert length > 0
    assert start <= first
    assert first + length <= start + size
    assert advice == 14
    view[:3] = b"end"
    assert big[:3] == b"end"
