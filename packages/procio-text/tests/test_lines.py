"""LineReceiveStream: framing under any chunking, bounded memory, nothing lost."""

from __future__ import annotations

import anyio
import pytest
from anyio import EndOfStream
from hypothesis import given, settings
from hypothesis import strategies as st
from procio_text import LineReceiveStream, LineTooLongError, TextReceiveStream

from ._streams import cuts, feed, split

pytestmark = pytest.mark.anyio

# Text rich in line boundaries, so that boundaries land on chunk edges often.
line_text = st.lists(
    st.sampled_from(
        [*list("ab é€\t"), "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
    ),
    max_size=120,
).map("".join)


async def lines_of(stream: LineReceiveStream) -> list[str]:
    return [line async for line in stream]


@settings(max_examples=200, deadline=None)
@given(text=line_text, cut_points=cuts, keepends=st.booleans())
async def test_text_chunks_frame_like_splitlines(
    text: str, cut_points: list[int], keepends: bool
) -> None:
    stream = LineReceiveStream(feed(split(text, cut_points)), keepends=keepends)
    assert await lines_of(stream) == text.splitlines(keepends)


@settings(max_examples=200, deadline=None)
@given(text=line_text, cut_points=cuts, keepends=st.booleans())
async def test_byte_chunks_frame_like_splitlines(
    text: str, cut_points: list[int], keepends: bool
) -> None:
    data = text.encode("utf-8")
    stream = LineReceiveStream(feed(split(data, cut_points)), keepends=keepends)
    assert await lines_of(stream) == text.splitlines(keepends)


@settings(max_examples=100, deadline=None)
@given(text=line_text, cut_points=cuts, keepends=st.booleans())
async def test_over_a_text_receive_stream(text: str, cut_points: list[int], keepends: bool) -> None:
    data = text.encode("utf-16")
    source = TextReceiveStream(feed(split(data, cut_points)), encoding="utf-16")
    assert await lines_of(LineReceiveStream(source, keepends=keepends)) == text.splitlines(keepends)


@settings(max_examples=150, deadline=None)
@given(
    text=line_text,
    cut_points=cuts,
    keepends=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n", "\0", "--"]),
)
async def test_explicit_newline_splits_only_there(
    text: str, cut_points: list[int], keepends: bool, newline: str
) -> None:
    text = text.replace("b", newline)
    pieces = text.split(newline)
    if pieces[-1] == "":
        pieces.pop()
        expected = [piece + newline if keepends else piece for piece in pieces]
    else:
        last = pieces.pop()
        expected = [piece + newline if keepends else piece for piece in pieces] + [last]
    stream = LineReceiveStream(feed(split(text, cut_points)), keepends=keepends, newline=newline)
    assert await lines_of(stream) == expected


@settings(max_examples=200, deadline=None)
@given(
    text=line_text,
    cut_points=cuts,
    limit=st.integers(min_value=1, max_value=12),
    newline=st.sampled_from([None, "\n", "\r\n"]),
    keepends=st.booleans(),
)
async def test_line_limit_loses_nothing_and_bounds_memory(
    text: str, cut_points: list[int], limit: int, newline: str | None, keepends: bool
) -> None:
    chunks = split(text, cut_points)
    longest_chunk = max(len(chunk) for chunk in chunks)
    stream = LineReceiveStream(
        feed(chunks), keepends=keepends, newline=newline, max_line_length=limit
    )
    delivered: list[str] = []
    errors = 0
    while True:
        try:
            line = await stream.receive()
        except EndOfStream:
            break
        except LineTooLongError as error:
            errors += 1
            assert error.max_line_length == limit
            assert len(error.buffered) <= limit + longest_chunk + len(newline or "\r\n")
            delivered.append(error.buffered)
        else:
            assert len(line) <= limit + (len(newline or "\r\n") if keepends else 0)
            delivered.append(line)
    if keepends:
        # Lines with their terminators plus the errors' buffered text: the whole input.
        assert "".join(delivered) == text
    too_long = any(
        len(line) > limit
        for line in (text.splitlines() if newline is None else text.split(newline))
    )
    assert (errors > 0) == too_long


async def test_crlf_split_across_chunks_is_one_boundary() -> None:
    stream = LineReceiveStream(feed([b"one\r", b"\ntwo\r", b"", b"\nthree"]), keepends=True)
    assert await lines_of(stream) == ["one\r\n", "two\r\n", "three"]


async def test_lone_cr_at_end_of_stream_ends_the_line() -> None:
    stream = LineReceiveStream(feed(["last\r"]))
    assert await stream.receive() == "last"
    with pytest.raises(EndOfStream):
        await stream.receive()


async def test_final_unterminated_line_is_delivered() -> None:
    assert await lines_of(LineReceiveStream(feed([b"a\nb"]))) == ["a", "b"]


async def test_empty_stream_has_no_lines() -> None:
    assert await lines_of(LineReceiveStream(feed([b"", b""]))) == []


async def test_blank_lines_are_kept() -> None:
    assert await lines_of(LineReceiveStream(feed(["\n\n", "x\n", "\n"]))) == ["", "", "x", ""]


async def test_character_split_across_byte_chunks() -> None:
    data = "née\n".encode()
    stream = LineReceiveStream(feed([data[:2], data[2:]]))
    assert await lines_of(stream) == ["née"]


async def test_incomplete_character_at_end_obeys_errors() -> None:
    truncated = "ok\né".encode()[:-1]
    with pytest.raises(UnicodeDecodeError):
        await lines_of(LineReceiveStream(feed([truncated])))
    replaced = LineReceiveStream(feed([truncated]), errors="replace")
    assert await lines_of(replaced) == ["ok", "\ufffd"]


async def test_lines_before_an_over_long_line_come_first() -> None:
    stream = LineReceiveStream(feed(["ok\nfine\n" + "x" * 20 + "\nafter\n"]), max_line_length=8)
    assert await stream.receive() == "ok"
    assert await stream.receive() == "fine"
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert info.value.buffered == "x" * 20 + "\nafter\n"
    assert "max_line_length=8" in str(info.value)
    assert isinstance(info.value, ValueError)


async def test_over_long_partial_line_fails_before_its_end_arrives() -> None:
    # The terminator never comes: the stream must fail once the limit is passed rather
    # than keep buffering.
    chunks = ["y" * 4] * 1000
    stream = LineReceiveStream(feed(chunks), max_line_length=10)
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert len(info.value.buffered) == 12


async def test_stream_goes_on_after_an_over_long_line() -> None:
    stream = LineReceiveStream(feed(["abcdefgh", "ij\nk\n"]), max_line_length=5)
    with pytest.raises(LineTooLongError):
        await stream.receive()
    assert await lines_of(stream) == ["ij", "k"]


async def test_last_line_ending_in_half_a_separator_obeys_the_limit() -> None:
    # At the end of the stream the "\r" cannot begin "\r\n" any more: it is content.
    stream = LineReceiveStream(feed([b"ab\r"]), newline="\r\n", max_line_length=2)
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert info.value.buffered == "ab\r"


async def test_no_limit_accepts_long_lines() -> None:
    stream = LineReceiveStream(feed(["z" * 200_000, "\n"]), max_line_length=None)
    assert await lines_of(stream) == ["z" * 200_000]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"newline": ""}, "newline"),
        ({"max_line_length": 0}, "max_line_length"),
        ({"max_line_length": -5}, "max_line_length"),
    ],
)
def test_bad_arguments_raise_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LineReceiveStream(feed([b""]), **kwargs)  # type: ignore[arg-type]


def test_unknown_encoding_raises_lookup_error() -> None:
    with pytest.raises(LookupError):
        LineReceiveStream(feed([b""]), encoding="no-such-codec")


async def test_aclose_closes_transport_and_drops_buffer() -> None:
    source = feed(["a\nb\n"])
    stream = LineReceiveStream(source)
    assert await stream.receive() == "a"
    await stream.aclose()
    assert source.closed
    with pytest.raises(anyio.ClosedResourceError):
        await stream.receive()


async def test_iterates_with_async_for() -> None:
    collected = []
    async for line in LineReceiveStream(feed([b"1\n2\n3"])):
        collected.append(line)
    assert collected == ["1", "2", "3"]
