"""TextReceiveStream, TextSendStream, TextStream and TextConnectable."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import anyio
import anyio.streams.text
import pytest
from anyio import BrokenResourceError, EndOfStream, TypedAttributeSet, typed_attribute
from anyio.abc import ObjectStream, ObjectStreamConnectable
from anyio.streams.stapled import StapledObjectStream
from hypothesis import given, settings
from hypothesis import strategies as st
from procio_text import (
    LineReceiveStream,
    TextConnectable,
    TextReceiveStream,
    TextSendStream,
    TextStream,
)

from ._streams import Chunks, Sink, cuts, feed, receive_until, split

pytestmark = pytest.mark.anyio

ENCODINGS = ["utf-8", "utf-16", "utf-16-le", "utf-32", "latin-1", "cp1252", "shift_jis"]
ERRORS = ["strict", "replace", "ignore", "backslashreplace", "surrogateescape"]


async def drain(stream: TextReceiveStream) -> str:
    pieces = []
    while True:
        try:
            pieces.append(await stream.receive())
        except EndOfStream:
            return "".join(pieces)


@settings(max_examples=150, deadline=None)
@given(
    data=st.binary(max_size=600),
    cut_points=cuts,
    encoding=st.sampled_from(["utf-8", "utf-16", "latin-1"]),
    errors=st.sampled_from(["strict", "replace", "ignore"]),
)
async def test_any_chunking_decodes_like_bytes_decode(
    data: bytes, cut_points: list[int], encoding: str, errors: str
) -> None:
    try:
        expected: str | None = data.decode(encoding, errors)
    except UnicodeDecodeError:
        expected = None
    stream = TextReceiveStream(feed(split(data, cut_points)), encoding=encoding, errors=errors)
    if expected is None:
        failure = _first_error(data, encoding)
        received, error = await receive_until(stream, UnicodeDecodeError)
        # Every character before the first undecodable byte came out before the error,
        # and the error holds the bytes from there on (as many as it had been given).
        assert "".join(received) == data[: failure.start].decode(encoding)
        assert error.end > error.start
        assert data[failure.start :].startswith(error.object[error.start :])
        with pytest.raises(BrokenResourceError):
            await stream.receive()
    else:
        assert await drain(stream) == expected


def _first_error(data: bytes, encoding: str) -> UnicodeDecodeError:
    try:
        data.decode(encoding)
    except UnicodeDecodeError as error:
        return error
    raise AssertionError(f"{data!r} decodes as {encoding}")


@settings(max_examples=100, deadline=None)
@given(text=st.text(max_size=300), cut_points=cuts, encoding=st.sampled_from(ENCODINGS[:5]))
async def test_valid_text_round_trips_under_any_chunking(
    text: str, cut_points: list[int], encoding: str
) -> None:
    try:
        data = text.encode(encoding)
    except UnicodeEncodeError:
        return  # latin-1 cannot hold every character; the other property covers bytes
    stream = TextReceiveStream(feed(split(data, cut_points)), encoding=encoding)
    assert await drain(stream) == text


async def test_character_split_across_chunks_is_held_until_whole() -> None:
    euro = "€".encode()
    stream = TextReceiveStream(feed([b"a" + euro[:1], euro[1:2], euro[2:] + b"b"]))
    assert await stream.receive() == "a"
    assert await stream.receive() == "€b"


async def test_empty_chunks_are_skipped() -> None:
    stream = TextReceiveStream(feed([b"", b"x", b"", b"", b"y", b""]))
    assert await stream.receive() == "x"
    assert await stream.receive() == "y"
    with pytest.raises(EndOfStream):
        await stream.receive()


async def test_incomplete_character_at_end_raises_when_strict() -> None:
    stream = TextReceiveStream(feed([b"ok", "é".encode()[:1]]))
    assert await stream.receive() == "ok"
    with pytest.raises(UnicodeDecodeError):
        await stream.receive()


async def test_incomplete_character_at_end_becomes_replacement_character() -> None:
    stream = TextReceiveStream(feed([b"ok", "é".encode()[:1]]), errors="replace")
    assert await drain(stream) == "ok\ufffd"


async def test_incomplete_character_at_end_vanishes_only_with_ignore() -> None:
    stream = TextReceiveStream(feed([b"ok", "é".encode()[:1]]), errors="ignore")
    assert await drain(stream) == "ok"


async def test_odd_trailing_byte_of_utf16_obeys_errors() -> None:
    data = "hi".encode("utf-16-le") + b"\x00"
    with pytest.raises(UnicodeDecodeError):
        await drain(TextReceiveStream(feed([data]), encoding="utf-16-le"))
    assert await drain(TextReceiveStream(feed([data]), encoding="utf-16-le", errors="replace")) == (
        "hi\ufffd"
    )


async def test_invalid_bytes_mid_stream_raise_when_strict() -> None:
    stream = TextReceiveStream(feed([b"good", b"\xff\xfe bad"]))
    assert await stream.receive() == "good"
    with pytest.raises(UnicodeDecodeError):
        await stream.receive()


def test_unknown_encoding_fails_at_construction() -> None:
    with pytest.raises(LookupError):
        TextReceiveStream(feed([b""]), encoding="no-such-codec")
    with pytest.raises(LookupError):
        TextSendStream(Sink(), encoding="no-such-codec")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32", "utf-8-sig"])
async def test_encoder_writes_byte_order_mark_once(encoding: str) -> None:
    sink = Sink()
    stream = TextSendStream(sink, encoding=encoding)
    for piece in ["ab", "c", "", "déf"]:
        await stream.send(piece)
    data = sink.data
    assert data == "abcdéf".encode(encoding)
    assert data.decode(encoding) == "abcdéf"


async def test_send_encodes_with_errors_scheme() -> None:
    sink = Sink()
    stream = TextSendStream(sink, encoding="ascii", errors="replace")
    await stream.send("café")
    assert sink.data == b"caf?"


async def test_unencodable_text_raises_and_sends_nothing() -> None:
    sink = Sink()
    stream = TextSendStream(sink, encoding="ascii")
    with pytest.raises(UnicodeEncodeError):
        await stream.send("café")
    assert sink.items == []


async def test_send_rejects_bytes_with_type_error() -> None:
    sink = Sink()
    with pytest.raises(TypeError, match="takes str"):
        await TextSendStream(sink).send(b"raw")  # type: ignore[arg-type]
    assert sink.items == []


def _byte_pair() -> tuple[ObjectStream[bytes], ObjectStream[bytes]]:
    a_send, b_receive = anyio.create_memory_object_stream[bytes](100)
    b_send, a_receive = anyio.create_memory_object_stream[bytes](100)
    return StapledObjectStream(a_send, a_receive), StapledObjectStream(b_send, b_receive)


async def test_text_stream_round_trip_both_directions() -> None:
    left, right = _byte_pair()
    text_left = TextStream(left, encoding="utf-16")
    text_right = TextStream(right, encoding="utf-16")
    await text_left.send("hello ")
    await text_left.send("wörld")
    assert await text_right.receive() == "hello "
    assert await text_right.receive() == "wörld"
    await text_right.send("back")
    assert await text_left.receive() == "back"
    await text_left.send_eof()
    with pytest.raises(EndOfStream):
        await text_right.receive()
    await text_left.aclose()
    await text_right.aclose()
    with pytest.raises(anyio.ClosedResourceError):
        await left.send(b"x")


class _Tags(TypedAttributeSet):
    receiving: str = typed_attribute()
    sending: str = typed_attribute()
    side: str = typed_attribute()


class _TaggedChunks(Chunks[bytes]):
    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {_Tags.receiving: lambda: "yes", _Tags.side: lambda: "receive"}


class _TaggedSink(Sink):
    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        return {_Tags.sending: lambda: "yes", _Tags.side: lambda: "send"}


async def test_extra_attributes_pass_through() -> None:
    receive_side = TextReceiveStream(_TaggedChunks([]))
    assert receive_side.extra(_Tags.receiving) == "yes"
    assert receive_side.extra(_Tags.side) == "receive"
    assert receive_side.extra(_Tags.sending, None) is None
    lines = LineReceiveStream(_TaggedChunks([]))
    assert lines.extra(_Tags.side) == "receive"
    send_side = TextSendStream(_TaggedSink())
    assert send_side.extra(_Tags.sending) == "yes"
    assert send_side.extra(_Tags.side) == "send"
    # Both directions' attributes; where both have one, the receive side's wins.
    both = TextStream(StapledObjectStream(_TaggedSink(), _TaggedChunks([])))
    assert both.extra(_Tags.receiving) == "yes"
    assert both.extra(_Tags.sending) == "yes"
    assert both.extra(_Tags.side) == "receive"


async def test_aclose_closes_the_transport() -> None:
    receive = feed([b"x"])
    stream = TextReceiveStream(receive)
    await stream.aclose()
    assert receive.closed
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()


class _Connectable(ObjectStreamConnectable[bytes]):
    def __init__(self, stream: ObjectStream[bytes]) -> None:
        self.stream = stream

    async def connect(self) -> ObjectStream[bytes]:
        return self.stream


async def test_text_connectable_takes_encoding_and_errors() -> None:
    left, right = _byte_pair()
    stream = await TextConnectable(
        _Connectable(left), encoding="latin-1", errors="strict"
    ).connect()
    async with stream, right:
        assert isinstance(stream, TextStream)
        await stream.send("é")
        assert await right.receive() == "é".encode("latin-1")
        await right.send(b"\xe9t\xe9")
        assert await stream.receive() == "été"


async def test_text_connectable_defaults_match_anyio() -> None:
    left, right = _byte_pair()
    ours = await TextConnectable(_Connectable(left)).connect()
    async with ours, right:
        await ours.send("ü")
        assert await right.receive() == "ü".encode()


async def test_text_connectable_rejects_unknown_codec_early() -> None:
    left, right = _byte_pair()
    async with left, right:
        with pytest.raises(LookupError):
            TextConnectable(_Connectable(left), encoding="no-such-codec")


@pytest.mark.parametrize(
    "name", ["TextReceiveStream", "TextSendStream", "TextStream", "TextConnectable"]
)
def test_constructor_arguments_match_anyio(name: str) -> None:
    import inspect

    import procio_text

    ours = inspect.signature(getattr(procio_text, name))
    theirs = inspect.signature(getattr(anyio.streams.text, name))
    for parameter in theirs.parameters.values():
        assert parameter.name in ours.parameters
        mine = ours.parameters[parameter.name]
        assert mine.kind == parameter.kind
        assert mine.default == parameter.default


async def test_decoding_matches_anyio_on_valid_input() -> None:
    data = "naïve café ✓ 漢字".encode() * 50
    chunks = split(data, list(range(0, len(data), 7)))
    ours = await drain(TextReceiveStream(feed(chunks)))
    theirs_stream = anyio.streams.text.TextReceiveStream(feed(chunks))
    theirs = []
    async for piece in theirs_stream:
        theirs.append(piece)
    assert ours == "".join(theirs) == data.decode()


_NATIVE_LONE_SURROGATE = b"\x00\xdc" if sys.byteorder == "little" else b"\xdc\x00"
_UNDECODABLE = {
    "utf-8": b"\xff",
    "utf-16": _NATIVE_LONE_SURROGATE,
    "utf-16-le": b"\x00\xdc",
    "utf-32": b"\xff\xff\xff\xff",
    "latin-1": b"",  # every byte is a character
    "cp1252": b"\x81",
    "shift_jis": b"\x80",
}


@pytest.mark.parametrize("one_chunk", [True, False], ids=["one chunk", "byte by byte"])
@pytest.mark.parametrize("errors", ERRORS)
@pytest.mark.parametrize("encoding", ENCODINGS)
async def test_every_encoding_and_error_scheme_under_test(
    encoding: str, errors: str, one_chunk: bool
) -> None:
    head = "ok ✓ é\n".encode(encoding, "replace")
    data = (
        head
        + _UNDECODABLE[encoding]
        + "after\n".encode(encoding, "replace")[
            2 if encoding == "utf-16" else 4 if encoding == "utf-32" else 0 :
        ]
    )
    chunks = [data] if one_chunk else [data[i : i + 1] for i in range(len(data))]
    stream = TextReceiveStream(feed(chunks), encoding=encoding, errors=errors)
    try:
        expected = data.decode(encoding, errors)
    except UnicodeDecodeError as failure:
        # Strict, or a scheme that cannot handle these bytes (surrogateescape cannot
        # escape the ASCII half of a UTF-16 code unit) and re-raises.
        assert errors in ("strict", "surrogateescape")
        received, _ = await receive_until(stream, UnicodeDecodeError)
        assert "".join(received) == data[: failure.start].decode(encoding) == head.decode(encoding)
        with pytest.raises(BrokenResourceError):
            await stream.receive()
    else:
        assert errors != "strict" or encoding == "latin-1"
        assert await drain(stream) == expected


async def test_text_before_an_undecodable_byte_is_delivered_first() -> None:
    source = feed([b"good line\nbad \xff byte\nmore\n", b"never read"])
    stream = TextReceiveStream(source)
    assert await stream.receive() == "good line\nbad "
    with pytest.raises(UnicodeDecodeError) as info:
        await stream.receive()
    error = info.value
    assert error.object[error.start : error.end] == b"\xff"
    assert error.object[error.start :] == b"\xff byte\nmore\n"
    # Broken from then on: a typed error each time, caused by the decoding error, and
    # the transport is not read any further.
    for _ in range(2):
        with pytest.raises(BrokenResourceError) as broken:
            await stream.receive()
        assert broken.value.__cause__ is error
    assert source.remaining == 1


@pytest.mark.parametrize(
    ("encoding", "chunks", "before"),
    [
        ("utf-8", [b"ab\xe2\x82", b"\xacc\xffd"], ["ab", "€c"]),
        ("shift_jis", [b"\x82", b"\xa0\x82\xa2\x82\xa4ok\x80\xff"], ["あいうok"]),
        ("utf-16", [b"\xff\xfeh\x00i", b"\x00\x00\xdcx\x00"], ["h", "i"]),
        ("utf-16-le", [b"h\x00i\x00\x00\xdc"], ["hi"]),
        # A shift into JIS X 0208 in one chunk, and back out before the bad byte in the
        # next: the text between is decoded in the shifted state.
        ("iso2022_jp", [b"\x1b$B", b"!-\x1b(B\x80"], ["\xb4"]),
    ],
)
async def test_characters_completed_before_the_bad_bytes_come_out(
    encoding: str, chunks: list[bytes], before: list[str]
) -> None:
    stream = TextReceiveStream(feed(chunks), encoding=encoding)
    for text in before:
        assert await stream.receive() == text
    with pytest.raises(UnicodeDecodeError):
        await stream.receive()


@pytest.mark.parametrize("one_chunk", [True, False], ids=["one-chunk", "byte-by-byte"])
@pytest.mark.parametrize(
    ("data", "before"),
    [
        # At the end of the input: a lone high surrogate (0x80 0xd8), which
        # surrogateescape turns into two escapes, then an odd byte, ASCII, which it
        # cannot escape.
        (b"\n\x00\x00\x00\x80\xd80", "\n\x00\udc80\udcd8"),
        # Within the input: the same escaped surrogate, then one whose low byte (0x00)
        # cannot be escaped.
        (b"a\x00\x80\xd8\x00\xd8\x00\x00z\x00", "a\udc80\udcd8"),
    ],
    ids=["at-the-end", "within"],
)
async def test_what_a_lenient_handler_produced_before_it_gave_up_comes_out(
    data: bytes, before: str, one_chunk: bool
) -> None:
    # The error handler handles some bad bytes, then gives up on later ones: what it
    # produced before giving up is text before the error, as bytes.decode has it.
    with pytest.raises(UnicodeDecodeError) as whole:
        data.decode("utf-16-le", "surrogateescape")
    assert data[: whole.value.start].decode("utf-16-le", "surrogateescape") == before
    chunks = [data] if one_chunk else [data[i : i + 1] for i in range(len(data))]
    stream = TextReceiveStream(feed(chunks), encoding="utf-16-le", errors="surrogateescape")
    received, _ = await receive_until(stream, UnicodeDecodeError)
    assert "".join(received) == before
    with pytest.raises(BrokenResourceError):
        await stream.receive()


async def test_text_stream_is_broken_after_a_decoding_error() -> None:
    left, right = _byte_pair()
    async with TextStream(left) as stream, right:
        await right.send(b"fine \xc3( rest")
        assert await stream.receive() == "fine "
        with pytest.raises(UnicodeDecodeError):
            await stream.receive()
        with pytest.raises(BrokenResourceError):
            await stream.receive()
        # Sending is not affected.
        await stream.send("still")
        assert await right.receive() == b"still"
