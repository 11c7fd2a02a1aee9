"""Bad input for the text layer: undecodable bytes and over-long lines, fuzzed.

The properties, under any chunking: every line comes out as :mod:`io`'s universal
newlines (or the explicit separator) frame it; an over-long line is one
``LineTooLongError``, holding the start of that line, and no other line is lost; with
``errors="strict"`` every complete line before the first undecodable byte comes out,
then one ``LineDecodeError`` holding the start of the interrupted line and the bad
bytes, then ``BrokenResourceError``. The same hold over a real pipe from a child process.
"""

from __future__ import annotations

import codecs
import io
import itertools
import logging
import re
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.lowlevel
import pytest
from anyio import BrokenResourceError, EndOfStream, create_task_group
from anyio.abc import ByteReceiveStream, ByteSendStream
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from procio_process import open_process
from procio_text import LineDecodeError, LineReceiveStream, LineTooLongError, TextReceiveStream

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
    """Run a coroutine to completion in an event loop of its own (asyncio).

    The transports here never wait, but the stream still yields to the event loop
    once it has handed out buffered lines for a while (its checkpoint interval): on a
    loaded machine that happens within one example, and needs a loop to yield to.
    """

    async def run() -> T:
        return await coroutine

    return anyio.run(run)


def test_run_now_gives_a_stream_that_checkpoints_an_event_loop() -> None:
    async def checkpoints() -> int:
        await anyio.lowlevel.checkpoint()
        return 7

    assert run_now(checkpoints()) == 7


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({min(cut, len(data)) for cut in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def reference_lines(text: str, newline: str | None) -> list[tuple[str, str]]:
    """``(content, terminator)`` pairs of *text*, framed without procio.

    ``newline=None``: io's universal newlines (``io.StringIO(newline="")`` keeps the
    terminators as they were). The last pair's terminator is ``""`` if it has none.
    """
    if newline is None:
        pairs = []
        for line in io.StringIO(text, newline="").readlines():
            content = line.removesuffix("\n").removesuffix("\r")
            pairs.append((content, line[len(content) :]))
        return pairs
    pieces = text.split(newline)
    last = pieces.pop()
    return [(piece, newline) for piece in pieces] + ([(last, "")] if last else [])


def expected_items(text: str, newline: str | None, limit: int | None) -> list[tuple[bool, str]]:
    """What a keepends stream must deliver: ``(False, line)`` for a line, ``(True,
    content)`` where it must raise ``LineTooLongError`` for an over-long line."""
    return [
        (True, content) if limit is not None and len(content) > limit else (False, content + end)
        for content, end in reference_lines(text, newline)
    ]


def assert_delivered(
    pieces: list[tuple[bool, str]], expected: list[tuple[bool, str]], limit: int, slack: int
) -> None:
    assert [overflow for overflow, _ in pieces] == [overflow for overflow, _ in expected], (
        pieces,
        expected,
    )
    for (overflow, got), (_, wanted) in zip(pieces, expected, strict=True):
        if overflow:
            # The start of the over-long line: past the limit, at most about a chunk more.
            assert wanted.startswith(got), (got, wanted)
            assert limit < len(got) <= limit + slack, (got, limit)
        else:
            assert got == wanted


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
# Two chunks of one incomplete sequence: the decoder holds the first byte back, and the
# refused start then carries both bytes, escaped, past a one-byte chunk's allowance.
@example(data=b"\xe2\x82", cuts=[1], errors="backslashreplace", limit=1, newline=None)
def test_over_long_lines_and_bad_bytes_lose_no_other_line(
    data: bytes, cuts: list[int], errors: str, limit: int, newline: str | None
) -> None:
    chunks = split(data, cuts)
    stream = LineReceiveStream(
        Chunks(chunks), errors=errors, keepends=True, newline=newline, max_line_length=limit
    )
    pieces = receive_everything(stream)
    expected = expected_items(data.decode("utf-8", errors), newline, limit)
    longest_chunk = max((len(chunk) for chunk in chunks), default=0)
    # backslashreplace turns one byte into four characters; the decoder may hold back up
    # to three bytes of an incomplete sequence from the chunks before, and a partial
    # separator held back adds at most one more character.
    assert_delivered(pieces, expected, limit, 4 * (longest_chunk + 3) + 1)
    tally("text inputs fuzzed")
    tally("over-long lines refused", sum(overflow for overflow, _ in pieces))


def test_the_last_line_obeys_the_limit_when_it_ends_with_half_a_separator() -> None:
    stream = LineReceiveStream(Chunks([b"ab\r"]), newline="\r\n", max_line_length=2)
    pieces = receive_everything(stream)
    # "ab\r" is a 3-character line at the end of the stream: it must be refused.
    assert pieces == [(True, "ab\r")]


@settings(max_examples=scaled(300), deadline=None)
@given(data=byte_soup, cuts=cut_points, newline=st.sampled_from([None, "\n", "\r\n"]))
def test_undecodable_bytes_raise_a_typed_error_after_the_good_lines(
    data: bytes, cuts: list[int], newline: str | None
) -> None:
    stream = LineReceiveStream(
        Chunks(split(data, cuts)), keepends=True, newline=newline, max_line_length=None
    )
    lines: list[str] = []
    failures: list[LineDecodeError] = []

    async def drain() -> None:
        while True:
            try:
                lines.append(await stream.receive())
            except LineDecodeError as error:
                failures.append(error)
                with pytest.raises(BrokenResourceError):
                    await stream.receive()
                return
            except EndOfStream:
                return

    run_now(drain())
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as expected:
        # Every complete line before the first bad byte, exactly, then the error with
        # the start of the interrupted line and the bytes from the bad one on.
        pairs = reference_lines(data[: expected.start].decode("utf-8"), newline)
        partial = pairs.pop()[0] if pairs and not pairs[-1][1] else ""
        assert lines == [content + end for content, end in pairs]
        assert len(failures) == 1
        error = failures[0]
        assert error.buffered == partial
        assert error.end > error.start
        assert data[expected.start :].startswith(error.object[error.start :])
        tally("undecodable inputs refused")
    else:
        assert failures == []
        assert lines == [
            content + end for content, end in reference_lines(data.decode("utf-8"), newline)
        ]
    tally("text inputs fuzzed")


@settings(max_examples=scaled(300), deadline=None)
@given(
    data=byte_soup,
    cuts=cut_points,
    encoding=st.sampled_from(["utf-8", "utf-16-le", "utf-16", "shift_jis"]),
    errors=st.sampled_from(["strict", *LENIENT]),
)
# Found by a soak: surrogateescape escapes a lone high surrogate (0x80 0xd8), then gives
# up on the odd ASCII byte after it; the escapes come out before the error.
@example(data=b"\n\x00\x00\x00\x80\xd80", cuts=[], encoding="utf-16-le", errors="surrogateescape")
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
    except UnicodeDecodeError as failure:
        with pytest.raises(UnicodeDecodeError):
            run_now(drain())
        # Everything before the bad bytes came out first, as the error handler made it
        # (a lenient one may have handled bad bytes before those it gave up on); then
        # the stream is broken.
        assert "".join(received) == codecs.decode(data[: failure.start], encoding, errors)
        with pytest.raises(BrokenResourceError):
            run_now(stream.receive())
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
        pieces: list[tuple[bool, str]] = []
        while True:
            try:
                pieces.append((False, await stream.receive()))
            except LineTooLongError as error:
                pieces.append((True, error.buffered))
            except EndOfStream:
                break
    expected = expected_items((data * 50).decode("utf-8", "surrogateescape"), None, limit)
    # A pipe hands over at most 64 KiB at a time.
    assert_delivered(pieces, expected, limit, 65536)
    assert process.returncode == 0
    tally("text inputs fuzzed")


def _recovery_example() -> str:
    """The over-long line recovery example of the text streams page, as written."""
    page = Path(__file__).resolve().parents[2] / "docs" / "text.md"
    blocks = re.findall(r"```python\n(.*?)```", page.read_text(encoding="utf-8"), re.DOTALL)
    (example,) = [block for block in blocks if "except LineTooLongError" in block]
    return str(example)


class _Process:
    def __init__(self, chunks: Sequence[bytes]) -> None:
        self.stdout = Chunks(chunks)


@pytest.mark.anyio
async def test_the_documented_recovery_example_does_what_it_says(
    anyio_backend: Any, caplog: pytest.LogCaptureFixture
) -> None:
    namespace: dict[str, Any] = {}
    exec(compile(_recovery_example(), "text streams page", "exec"), namespace)
    handled: list[str] = []
    data = b"first\n" + b"x" * 5000 + b"\nsecond\n" + b"y" * 3000 + b"\r\nthird"
    process = _Process(split(data, list(range(0, len(data), 700))))
    with caplog.at_level(logging.WARNING):
        await namespace["read_lines"](process, handled.append)
    assert handled == ["first", "second", "third"]
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 2
    assert "more than 1024 characters" in warnings[0]
    assert "'xxxx" in warnings[0]
    assert "'yyyy" in warnings[1]
