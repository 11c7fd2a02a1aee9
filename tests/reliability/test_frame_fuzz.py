"""Fuzzing the frame reader that both sides of the worker protocol use.

The parent and the worker program decode frames with the same ``FrameReader``. Whatever
bytes arrive, split however they are, it must either decode exactly the frames that
were encoded or raise ``ProtocolError``, and it must never allocate more than its frame
limit because a header says so.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procio_workers import _wire
from procio_workers._wire import FrameReader, ProtocolError

from ._support import scaled, tally

kinds = st.sampled_from(sorted(_wire.KIND_NAMES))
# A segment is drawn as bytes, or as the size of a large one (larger than the reader's
# scratch buffer, so that it is read straight into place), built by ``materialize`` so
# that hypothesis never has to print megabytes.
segments = st.lists(
    st.one_of(st.binary(max_size=64), st.integers(min_value=60_000, max_value=200_000)),
    max_size=6,
)
frame_specs = st.lists(st.tuples(kinds, segments), max_size=8)
cut_points = st.lists(st.integers(min_value=0, max_value=1_200_000), max_size=40)

Spec = list[tuple[int, list[bytes | int]]]


def materialize(specs: Spec) -> list[tuple[int, list[bytes]]]:
    return [
        (kind, [s if isinstance(s, bytes) else bytes([s % 251]) * s for s in segs])
        for kind, segs in specs
    ]


def encode(frame_list: list[tuple[int, list[bytes]]]) -> bytes:
    out = bytearray()
    for kind, segs in frame_list:
        for buffer in _wire.encode_frame(kind, segs):
            out += memoryview(buffer).cast("B")
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def decoded(reader: FrameReader) -> list[tuple[int, list[bytes]]]:
    return [(frame.kind, [bytes(s) for s in frame.segments]) for frame in reader.frames]


def feed_by_reads(reader: FrameReader, data: bytes, read_sizes: list[int]) -> None:
    """Feed *data* as a pipe would: into the reader's own buffer, in reads of given sizes."""
    view = memoryview(data)
    sizes = iter(read_sizes)
    while view.nbytes:
        target = reader.buffer()
        count = min(target.nbytes, view.nbytes, next(sizes, 1 << 20) or 1)
        target[:count] = view[:count]
        del target
        reader.commit(count)
        view = view[count:]


@settings(max_examples=scaled(200), deadline=None)
@given(specs=frame_specs, cuts=cut_points)
def test_frames_survive_any_split(specs: Spec, cuts: list[int]) -> None:
    frame_list = materialize(specs)
    data = encode(frame_list)
    reader = FrameReader()
    for chunk in split(data, cuts):
        reader.feed(chunk)
    reader.eof()
    assert decoded(reader) == frame_list
    tally("frame streams fuzzed")


@settings(max_examples=scaled(200), deadline=None)
@given(
    specs=frame_specs,
    read_sizes=st.lists(st.integers(min_value=1, max_value=300_000), max_size=40),
)
def test_frames_survive_any_read_sizes_into_the_readers_buffer(
    specs: Spec, read_sizes: list[int]
) -> None:
    frame_list = materialize(specs)
    data = encode(frame_list)
    reader = FrameReader()
    feed_by_reads(reader, data, read_sizes)
    reader.eof()
    assert decoded(reader) == frame_list
    tally("frame streams fuzzed")


@settings(max_examples=scaled(200), deadline=None)
@given(specs=frame_specs.filter(bool), data=st.data())
def test_a_truncated_stream_is_a_protocol_error_and_keeps_the_whole_frames(
    specs: Spec, data: st.DataObject
) -> None:
    frame_list = materialize(specs)
    encoded = encode(frame_list)
    ends = [len(encode(frame_list[: index + 1])) for index in range(len(frame_list))]
    boundaries = {0, *ends}
    cut = data.draw(
        st.integers(min_value=1, max_value=len(encoded) - 1).filter(lambda n: n not in boundaries),
        label="cut",
    )
    reader = FrameReader()
    reader.feed(encoded[:cut])
    complete = [frame for frame, end in zip(frame_list, ends, strict=True) if end <= cut]
    assert decoded(reader) == complete
    assert reader.mid_frame
    with pytest.raises(ProtocolError, match="middle of a frame"):
        reader.eof()
    tally("truncated frame streams refused")


@settings(max_examples=scaled(1000), deadline=None)
@given(data=st.binary(max_size=2000), cuts=cut_points)
def test_random_bytes_give_frames_or_a_protocol_error(data: bytes, cuts: list[int]) -> None:
    limit = 1 << 16
    reader = FrameReader(max_frame_length=limit)
    try:
        for chunk in split(data, cuts):
            reader.feed(chunk)
        reader.eof()
    except ProtocolError:
        tally("random byte streams refused")
    for frame in reader.frames:
        assert frame.kind in _wire.KIND_NAMES
        assert sum(len(s) for s in frame.segments) <= limit
    tally("random byte streams fuzzed")


@settings(max_examples=scaled(300), deadline=None)
@given(
    kind=kinds,
    lengths=st.lists(st.integers(min_value=0, max_value=2**64 - 1), min_size=1, max_size=8),
)
def test_a_huge_announced_length_is_refused_before_any_allocation(
    kind: int, lengths: list[int]
) -> None:
    header = _wire.HEADER.pack(kind, 0, len(lengths)) + b"".join(
        struct.pack(">Q", n) for n in lengths
    )
    reader = FrameReader()  # the default limit: 1 GiB
    if sum(lengths) > reader.max_frame_length:
        with pytest.raises(ProtocolError, match="exceeds the limit"):
            reader.feed(header)
        tally("huge frame lengths refused")
    else:
        reader.feed(header[:4])  # a plausible length: no error, the frame waits
        assert reader.mid_frame
    tally("frame headers fuzzed")


@settings(max_examples=scaled(300), deadline=None)
@given(
    kind=st.integers(min_value=0, max_value=255),
    flags=st.integers(min_value=0, max_value=255),
    count=st.integers(min_value=0, max_value=65535),
)
def test_unknown_kinds_flags_and_counts_are_protocol_errors(
    kind: int, flags: int, count: int
) -> None:
    reader = FrameReader()
    header = _wire.HEADER.pack(kind, flags, count)
    valid = kind in _wire.KIND_NAMES and flags == 0 and count <= _wire.MAX_SEGMENTS
    if valid:
        reader.feed(header)
        assert reader.frames or reader.mid_frame
    else:
        with pytest.raises(ProtocolError):
            reader.feed(header)
        tally("bad frame headers refused")
    tally("frame headers fuzzed")


def test_too_many_segments_cannot_be_encoded() -> None:
    with pytest.raises(ProtocolError):
        _wire.encode_frame(_wire.CALL, [b""] * (_wire.MAX_SEGMENTS + 1))
