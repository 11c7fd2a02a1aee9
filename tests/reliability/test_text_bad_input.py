"""Bad input for the text layer: undecodable bytes and over-long lines, fuzzed.

The properties: a typed error (``UnicodeDecodeError``, ``LineTooLongError``) and never
a loss. With a lenient ``errors`` scheme, every character the decoder produced comes out,
either in a delivered line or in the ``buffered`` text of a ``LineTooLongError``, in
order; no line is longer than the limit; what an error hands over stays bounded by the
limit plus one chunk. The same properties hold over a real pipe from a child process.
"""

from __future__ import annotations

import codecs
import itertools
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest
from anyio import EndOfStream, create_task_group
from anyio.abc import ByteReceiveStream, ByteSendStream
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procio_process import open_process
from procio_text import LineReceiveStream, LineTooLongError, TextReceiveStream

from ._support import scaled, tally

T = TypeVar("T")

LENIENT = ["replace", "surrogateescape", "backslashreplace", "ignore"]


class Chunks(ByteReceiveStream):
    """Hands out fixed chunks without ever suspending, then ends."""

    def __init__(self, chunks: Sequence[bytes]) -> None:
        self._chunks = list(reversed(chunks))

    async def receive(self, max_bytes: int = 65536) -> bytes:
        if not self._chunks:
            raise EndOfStream
        return self._chunks.pop()

    async def aclose(self) -> None:
        self._chunks.clear()


def run_now(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never suspends (its transport never waits) to completion."""
    try:
        coroutine.send(None)
    except StopIteration as stop:
        result: T = stop.value
        return result
    coroutine.close()
    raise AssertionError("the stream suspended over a transport that never waits")


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


# Text that is mostly line-shaped: valid UTF-8, every kind of line boundary, and bytes
# that no UTF-8 decoder accepts (lone continuation bytes, truncated sequences, 0xff).
_pieces = st.one_of(
    st.text(max_size=40).map(str.encode),
    st.sampled_from([b"\n", b"\r\n", b"\r", b"\x85", "\u2028".encode(), b"\x0b", b"\x1c"]),
    st.sampled_from([b"\xff", b"\x80", b"\xc3", b"\xe2\x82", b"\xf0\x9f\x98", b"\xed\xa0\x80"]),
    st.binary(max_size=30),
)
byte_soup = st.lists(_pieces, max_size=40).map(b"".join)
cut_points = st.lists(st.integers(min_value=0, max_value=2000), max_size=30)


def receive_everything(stream: LineReceiveStream) -> list[tuple[bool, str]]:
    """Return, in order, every delivered line ``(False, line)`` and every
    ``LineTooLongError.buffered`` ``(True, text)``."""
    pieces: list[tuple[bool, str]] = []

    async def drain() -> None:
        while True:
            try:
                pieces.append((False, await stream.receive()))
            except LineTooLongError as error:
                assert error.max_line_length == stream.max_line_length
                pieces.append((True, error.buffered))
            except EndOfStream:
                return

    run_now(drain())
    return pieces


@settings(max_examples=scaled(400), deadline=None)
@given(
    data=byte_soup,
    cuts=cut_points,
    errors=st.sampled_from(LENIENT),
    limit=st.integers(min_value=1, max_value=60),
    newline=st.sampled_from([None, "\n", "\r\n"]),
)
def test_over_long_lines_and_bad_bytes_lose_nothing(
    data: bytes, cuts: list[int], errors: str, limit: int, newline: str | None
) -> None:
    chunks = split(data, cuts)
    stream = LineReceiveStream(
        Chunks(chunks), errors=errors, keepends=True, newline=newline, max_line_length=limit
    )
    pieces = receive_everything(stream)
    assert "".join(text for _, text in pieces) == data.decode("utf-8", errors)
    overflows = [text for overflow, text in pieces if overflow]
    lines = [text for overflow, text in pieces if not overflow]
    for line in lines:
        content = line.removesuffix(newline) if newline else (line.splitlines() or [""])[0]
        assert len(content) <= limit, (line, limit)
    longest_chunk = max((len(chunk) for chunk in chunks), default=0)
    for buffered in overflows:
        # backslashreplace turns one byte into four characters; a held-back "\r" or a
        # partial separator adds at most two more.
        assert len(buffered) <= limit + 4 * (longest_chunk + 3) + 2
    tally("text inputs fuzzed")
    tally("over-long lines refused", len(overflows))


def test_the_last_line_obeys_the_limit_when_it_ends_with_half_a_separator() -> None:
    stream = LineReceiveStream(Chunks([b"ab\r"]), newline="\r\n", max_line_length=2)
    pieces = receive_everything(stream)
    # "ab\r" is a 3-character line at the end of the stream: it must be refused.
    assert pieces == [(True, "ab\r")]


@settings(max_examples=scaled(300), deadline=None)
@given(data=byte_soup, cuts=cut_points)
def test_undecodable_bytes_raise_a_typed_error_after_the_good_lines(
    data: bytes, cuts: list[int]
) -> None:
    stream = LineReceiveStream(Chunks(split(data, cuts)), keepends=True, max_line_length=None)
    lines: list[str] = []

    async def drain() -> None:
        while True:
            try:
                lines.append(await stream.receive())
            except EndOfStream:
                return

    try:
        data.decode("utf-8")
    except UnicodeDecodeError as expected:
        with pytest.raises(UnicodeDecodeError):
            run_now(drain())
        # Whatever came out before the error is text from before the first bad byte.
        valid_prefix = data[: expected.start].decode("utf-8")
        assert valid_prefix.startswith("".join(lines))
        tally("undecodable inputs refused")
    else:
        run_now(drain())
        assert "".join(lines) == data.decode("utf-8")
    tally("text inputs fuzzed")


@settings(max_examples=scaled(300), deadline=None)
@given(
    data=byte_soup,
    cuts=cut_points,
    encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16", "shift_jis"]),
    errors=st.sampled_from(["strict", *LENIENT]),
)
def test_text_receive_stream_decodes_like_bytes_decode(
    data: bytes, cuts: list[int], encoding: str, errors: str
) -> None:
    stream = TextReceiveStream(Chunks(split(data, cuts)), encoding=encoding, errors=errors)
    received: list[str] = []

    async def drain() -> None:
        while True:
            try:
                received.append(await stream.receive())
            except EndOfStream:
                return

    try:
        expected = codecs.decode(data, encoding, errors)
    except UnicodeDecodeError:
        with pytest.raises(UnicodeDecodeError):
            run_now(drain())
        tally("undecodable inputs refused")
    else:
        run_now(drain())
        assert "".join(received) == expected
    tally("text inputs fuzzed")


@pytest.mark.anyio
@settings(
    max_examples=scaled(15),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(data=byte_soup, limit=st.integers(min_value=1, max_value=200))
async def test_lines_from_a_child_process_lose_nothing(
    anyio_backend: Any, data: bytes, limit: int
) -> None:
    """The same property over a real pipe, which splits the bytes where it likes."""

    async def feed(stdin: ByteSendStream) -> None:
        await stdin.send(data * 50)
        await stdin.aclose()

    async with await open_process(["cat"]) as process, create_task_group() as tg:
        assert process.stdin is not None
        assert process.stdout is not None
        tg.start_soon(feed, process.stdin)
        stream = LineReceiveStream(
            process.stdout, errors="surrogateescape", keepends=True, max_line_length=limit
        )
        pieces: list[str] = []
        while True:
            try:
                pieces.append(await stream.receive())
            except LineTooLongError as error:
                pieces.append(error.buffered)
            except EndOfStream:
                break
    assert "".join(pieces).encode("utf-8", "surrogateescape") == data * 50
    assert process.returncode == 0
    tally("text inputs fuzzed")
