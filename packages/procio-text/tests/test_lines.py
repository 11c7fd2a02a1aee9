"""LineReceiveStream: framing under any chunking, bounded memory, nothing lost."""

from __future__ import annotations

import pickle

import anyio
import pytest
from anyio import BrokenResourceError, EndOfStream
from hypothesis import given, settings
from hypothesis import strategies as st
from procio_text import LineDecodeError, LineReceiveStream, LineTooLongError, TextReceiveStream

from ._streams import (
    Tracked,
    cuts,
    expected_lines,
    feed,
    receive_until,
    reference_lines,
    split,
)

pytestmark = pytest.mark.anyio

# Text rich in line boundaries, so that boundaries land on chunk edges often, and in the
# characters that str.splitlines() takes for boundaries but io's universal newlines do
# not, so that a stream splitting there is caught.
line_text = st.lists(
    st.sampled_from(
        [*list("ab é€\t"), "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
    ),
    max_size=120,
).map("".join)


async def lines_of(stream: LineReceiveStream) -> list[str]:
    return [line async for line in stream]


def test_the_oracle_is_ios_universal_newlines() -> None:
    # The reference the properties compare with: "\n", "\r", "\r\n", nothing else.
    text = "a\r\nb\rc\nd\x0ce\x85f\u2028g\x1ch\r"
    assert reference_lines(text) == [
        ("a", "\r\n"),
        ("b", "\r"),
        ("c", "\n"),
        ("d\x0ce\x85f\u2028g\x1ch", "\r"),
    ]
    assert reference_lines("x\ny") == [("x", "\n"), ("y", "")]
    assert reference_lines("--a----b-", "--") == [("", "--"), ("a", "--"), ("", "--"), ("b-", "")]


@settings(max_examples=200, deadline=None)
@given(text=line_text, cut_points=cuts, keepends=st.booleans())
async def test_text_chunks_frame_like_universal_newlines(
    text: str, cut_points: list[int], keepends: bool
) -> None:
    stream = LineReceiveStream(feed(split(text, cut_points)), keepends=keepends)
    assert await lines_of(stream) == expected_lines(text, keepends=keepends)


@settings(max_examples=200, deadline=None)
@given(text=line_text, cut_points=cuts, keepends=st.booleans())
async def test_byte_chunks_frame_like_universal_newlines(
    text: str, cut_points: list[int], keepends: bool
) -> None:
    data = text.encode("utf-8")
    stream = LineReceiveStream(feed(split(data, cut_points)), keepends=keepends)
    assert await lines_of(stream) == expected_lines(text, keepends=keepends)


@settings(max_examples=100, deadline=None)
@given(text=line_text, cut_points=cuts, keepends=st.booleans())
async def test_over_a_text_receive_stream(text: str, cut_points: list[int], keepends: bool) -> None:
    data = text.encode("utf-16")
    source = TextReceiveStream(feed(split(data, cut_points)), encoding="utf-16")
    lines = await lines_of(LineReceiveStream(source, keepends=keepends))
    assert lines == expected_lines(text, keepends=keepends)


@pytest.mark.parametrize(
    "boundary", ["\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"]
)
async def test_only_cr_and_lf_end_lines_by_default(boundary: str) -> None:
    stream = LineReceiveStream(feed([f"page{boundary}one\nnext\n"]))
    assert await lines_of(stream) == [f"page{boundary}one", "next"]


async def test_form_feeds_and_latin1_0x85_stay_inside_their_line() -> None:
    log = LineReceiveStream(feed([b"header\x0c\n", b"caf\x85 ok\r\n"]), encoding="latin-1")
    assert await lines_of(log) == ["header\x0c", "caf\x85 ok"]


@settings(max_examples=150, deadline=None)
@given(
    text=line_text,
    cut_points=cuts,
    keepends=st.booleans(),
    newline=st.sampled_from(["\n", "\r\n", "\0", "--", "abc"]),
)
async def test_explicit_newline_splits_only_there(
    text: str, cut_points: list[int], keepends: bool, newline: str
) -> None:
    text = text.replace("b", newline)
    stream = LineReceiveStream(feed(split(text, cut_points)), keepends=keepends, newline=newline)
    assert await lines_of(stream) == expected_lines(text, newline, keepends)


class TooLong:
    """Marks where a stream must raise LineTooLongError for the line *content*."""

    def __init__(self, content: str) -> None:
        self.content = content

    def __repr__(self) -> str:
        return f"TooLong({self.content!r})"


@settings(max_examples=300, deadline=None)
@given(
    text=line_text,
    cut_points=cuts,
    limit=st.integers(min_value=1, max_value=12),
    newline=st.sampled_from([None, "\n", "\r\n", "ab", "aba"]),
    keepends=st.booleans(),
)
async def test_one_error_per_over_long_line_and_every_other_line_delivered(
    text: str, cut_points: list[int], limit: int, newline: str | None, keepends: bool
) -> None:
    chunks = split(text, cut_points)
    longest_chunk = max(len(chunk) for chunk in chunks)
    expected: list[str | TooLong] = [
        TooLong(content)
        if len(content) > limit
        else (content + terminator if keepends else content)
        for content, terminator in reference_lines(text, newline)
    ]
    stream = LineReceiveStream(
        feed(chunks), keepends=keepends, newline=newline, max_line_length=limit
    )
    got: list[str | TooLong] = []
    while True:
        try:
            got.append(await stream.receive())
        except EndOfStream:
            break
        except LineTooLongError as error:
            assert error.max_line_length == limit
            # The start of the over-long line, more than the limit, at most one chunk
            # more (and the start of a separator held back from the chunk before).
            assert limit < len(error.buffered) <= limit + longest_chunk + len(newline or "x") - 1
            got.append(TooLong(error.buffered))
    assert len(got) == len(expected), (got, expected)
    for item, wanted in zip(got, expected, strict=True):
        if isinstance(wanted, TooLong):
            assert isinstance(item, TooLong), (got, expected)
            assert wanted.content.startswith(item.content)
        else:
            assert item == wanted, (got, expected)


async def test_good_lines_around_an_over_long_line_in_one_chunk() -> None:
    stream = LineReceiveStream(feed(["ok\n" + "x" * 20 + "\nafter\nend"]), max_line_length=8)
    assert await stream.receive() == "ok"
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert info.value.buffered == "x" * 20
    assert "max_line_length=8" in str(info.value)
    assert isinstance(info.value, ValueError)
    assert await lines_of(stream) == ["after", "end"]


async def test_a_huge_line_raises_once_then_the_next_line_comes() -> None:
    # 200 KB in 64 KiB chunks: one error for the line, however many chunks it spans.
    data = b"y" * 200_000 + b"\nok\n"
    chunks = [data[i : i + 65536] for i in range(0, len(data), 65536)]
    stream = LineReceiveStream(feed(chunks))
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    # The first chunk fits the default limit (65,536); the second shows the line too long.
    assert info.value.buffered == "y" * 2 * 65536
    assert await stream.receive() == "ok"
    with pytest.raises(EndOfStream):
        await stream.receive()


async def test_over_long_line_ended_by_cr_does_not_leave_an_empty_line() -> None:
    stream = LineReceiveStream(feed(["abcdefgh\r", "\nnext\r\n"]), max_line_length=4)
    with pytest.raises(LineTooLongError):
        await stream.receive()
    assert await lines_of(stream) == ["next"]


async def test_over_long_line_with_a_separator_split_across_chunks() -> None:
    stream = LineReceiveStream(
        feed(["0123456789-", "-", "-tail--"]), newline="---", max_line_length=6
    )
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert info.value.buffered == "0123456789"
    assert await lines_of(stream) == ["tail--"]


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


async def test_over_long_partial_line_fails_before_its_end_arrives() -> None:
    # The terminator never comes: the stream must fail once the limit is passed rather
    # than keep buffering.
    chunks = ["y" * 4] * 1000
    stream = LineReceiveStream(feed(chunks), max_line_length=10)
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert info.value.buffered == "y" * 12
    # The rest of the line is skipped: it never ends, so nothing more comes.
    with pytest.raises(EndOfStream):
        await stream.receive()


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


@pytest.mark.parametrize("size", [16_000, 64_000])
async def test_line_assembly_is_linear_in_the_input(size: int) -> None:
    # One long line arriving a character at a time: the stream may touch each character
    # a bounded number of times, not once per chunk that follows it.
    chunks = [Tracked(character) for character in "z" * size] + [Tracked("\n")]
    Tracked.touched = 0
    stream = LineReceiveStream(feed(chunks), max_line_length=None)
    assert await lines_of(stream) == ["z" * size]
    assert Tracked.touched <= 8 * size


async def test_undecodable_byte_after_good_lines() -> None:
    source = feed([b"good line\nbad \xff byte\nmore\n", b"never read\n"])
    stream = LineReceiveStream(source)
    assert await stream.receive() == "good line"
    with pytest.raises(LineDecodeError) as info:
        await stream.receive()
    error = info.value
    assert isinstance(error, UnicodeDecodeError)
    # The partial line before the bad byte, and the bad byte with what followed it.
    assert error.buffered == "bad "
    assert error.object[error.start : error.end] == b"\xff"
    assert error.object[error.start :] == b"\xff byte\nmore\n"
    # The stream is broken from then on, and reads nothing more from the transport.
    with pytest.raises(BrokenResourceError) as broken:
        await stream.receive()
    assert broken.value.__cause__ is error
    assert source.remaining == 1


async def test_undecodable_byte_after_a_cr_delivers_the_cr_line() -> None:
    stream = LineReceiveStream(feed([b"one\r", b"\xfftwo\n"]), keepends=True)
    assert await stream.receive() == "one\r"
    with pytest.raises(LineDecodeError) as info:
        await stream.receive()
    assert info.value.buffered == ""


async def test_incomplete_character_at_end_hands_over_the_partial_line() -> None:
    stream = LineReceiveStream(feed(["ok\nlast é".encode()[:-1]]))
    assert await stream.receive() == "ok"
    with pytest.raises(LineDecodeError) as info:
        await stream.receive()
    assert info.value.buffered == "last "
    with pytest.raises(BrokenResourceError):
        await stream.receive()


bad_bytes = st.sampled_from([b"\xff", b"\x80", b"\xc3(", b"\xe2\x82", b"\xed\xa0\x80"])


@settings(max_examples=300, deadline=None)
@given(
    text=line_text,
    bad=bad_bytes,
    after=line_text,
    cut_points=cuts,
    keepends=st.booleans(),
    newline=st.sampled_from([None, "\n", "\r\n", "ab", "aba"]),
)
async def test_every_line_before_a_bad_byte_comes_first(
    text: str, bad: bytes, after: str, cut_points: list[int], keepends: bool, newline: str | None
) -> None:
    data = text.encode() + bad + after.encode()
    start = len(text.encode())
    pairs = reference_lines(text, newline)
    partial = ""
    if pairs and not pairs[-1][1]:
        partial = pairs.pop()[0]
    stream = LineReceiveStream(
        feed(split(data, cut_points)), keepends=keepends, newline=newline, max_line_length=None
    )
    lines, error = await receive_until(stream, LineDecodeError)
    assert lines == [content + terminator if keepends else content for content, terminator in pairs]
    assert error.buffered == partial
    assert data[start:].startswith(error.object[error.start :])
    assert error.end > error.start
    with pytest.raises(BrokenResourceError):
        await stream.receive()


async def test_over_a_text_stream_that_fails_to_decode() -> None:
    source = TextReceiveStream(feed([b"one\ntw", b"o\nthr\xffee\n"]))
    stream = LineReceiveStream(source)
    lines, error = await receive_until(stream, LineDecodeError)
    assert lines == ["one", "two"]
    assert error.buffered == "thr"
    assert error.object[error.start :] == b"\xffee\n"
    with pytest.raises(BrokenResourceError):
        await stream.receive()


def test_errors_survive_pickling() -> None:
    # Errors cross process boundaries (a worker's result, a log record).
    too_long = pickle.loads(pickle.dumps(LineTooLongError(3, "abcd")))
    assert (type(too_long), too_long.max_line_length, too_long.buffered) == (
        LineTooLongError,
        3,
        "abcd",
    )
    assert str(too_long) == str(LineTooLongError(3, "abcd"))
    undecodable = LineDecodeError("utf-8", b"ab\xff", 2, 3, "invalid start byte", "xy")
    copy = pickle.loads(pickle.dumps(undecodable))
    assert type(copy) is LineDecodeError
    assert (copy.object, copy.start, copy.end, copy.reason, copy.buffered) == (
        b"ab\xff",
        2,
        3,
        "invalid start byte",
        "xy",
    )


async def test_bad_byte_after_a_partial_line_that_is_already_too_long() -> None:
    # "aaa" fits the limit; the "-" after it was held back as the possible start of
    # "--a", but the bad byte makes it content: the line is over-long, reported as such
    # before the decoding error, which then holds no text.
    stream = LineReceiveStream(feed([b"aaa-\xff"]), newline="--a", max_line_length=3)
    with pytest.raises(LineTooLongError) as info:
        await stream.receive()
    assert info.value.buffered == "aaa-"
    _, error = await receive_until(stream, LineDecodeError)
    assert error.buffered == ""


async def _one_chunk_of_many_lines(count: int) -> LineReceiveStream:
    send, receive = anyio.create_memory_object_stream[bytes](1)
    await send.send(b"x\n" * count)
    send.close()
    return LineReceiveStream(receive)


async def test_draining_buffered_lines_lets_other_tasks_run() -> None:
    # All lines arrive in one chunk, so only the first receive() waits on the transport;
    # the rest come from the buffer. Other tasks must still get to run while they do.
    count = 200_000
    lines = await _one_chunk_of_many_lines(count)
    delivered = 0
    seen_by_other_task: list[int] = []

    async def other() -> None:
        while delivered < count:
            seen_by_other_task.append(delivered)
            await anyio.lowlevel.checkpoint()

    async with lines, anyio.create_task_group() as tg:
        tg.start_soon(other)
        async for _ in lines:
            delivered += 1
    # The other task ran at points strictly inside the drain, not only around it.
    assert any(0 < seen < count for seen in seen_by_other_task), seen_by_other_task[:5]


async def test_draining_buffered_lines_can_be_cancelled() -> None:
    count = 200_000
    lines = await _one_chunk_of_many_lines(count)
    delivered = 0
    with anyio.CancelScope() as scope:

        async def cancel_soon() -> None:
            await anyio.lowlevel.checkpoint()
            scope.cancel()

        async with lines, anyio.create_task_group() as tg:
            tg.start_soon(cancel_soon)
            async for _ in lines:
                delivered += 1
    assert scope.cancelled_caught
    assert delivered < count
