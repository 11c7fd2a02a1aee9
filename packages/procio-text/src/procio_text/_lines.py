"""Line framing over a byte or text stream, with a bound on line length."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from anyio import EndOfStream
from anyio.abc import AnyByteReceiveStream, ObjectReceiveStream

from ._text import _Decoder

# Every character at which str.splitlines() ends a line. "\r\n" is the one two-character
# boundary; a "\r" at the end of the buffered text is therefore held back until the next
# chunk shows whether a "\n" follows it.
_BOUNDARIES = frozenset("\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029")


class LineTooLongError(ValueError):
    """A line grew past the stream's ``max_line_length``.

    The stream does not lose what it had buffered: :attr:`buffered` holds every character
    it had read and not yet delivered (the start of the over-long line and anything after
    it). The stream itself stays usable: its buffer is emptied, and the next
    :meth:`~LineReceiveStream.receive` goes on from the first character not in
    :attr:`buffered`, which is usually the rest of the over-long line.

    Attributes:
        max_line_length: The limit that was exceeded.
        buffered: The undelivered text taken out of the stream's buffer.
    """

    def __init__(self, max_line_length: int, buffered: str) -> None:
        super().__init__(
            f"line longer than max_line_length={max_line_length} characters "
            f"({len(buffered)} characters buffered and handed over in .buffered)"
        )
        self.max_line_length = max_line_length
        self.buffered = buffered


def _check_newline(newline: object) -> None:
    if newline is not None and not (isinstance(newline, str) and newline):
        raise ValueError(f"newline must be None or a non-empty string, not {newline!r}")


def _content_length(line: str) -> int:
    """Return the length of *line* without its line boundary."""
    if line.endswith("\r\n"):
        return len(line) - 2
    if line and line[-1] in _BOUNDARIES:
        return len(line) - 1
    return len(line)


class LineReceiveStream(ObjectReceiveStream[str]):
    """Receives whole lines from a byte stream or a text stream.

    With the default ``newline=None`` a line ends where :meth:`str.splitlines` would end
    it: at ``"\\n"``, ``"\\r\\n"``, ``"\\r"`` (universal newlines) and at the other Unicode
    line boundaries (``"\\v"``, ``"\\f"``, ``"\\x1c"``-``"\\x1e"``, ``"\\x85"``,
    ``"\\u2028"``, ``"\\u2029"``). A ``"\\r\\n"`` split between two chunks is still one
    boundary. With ``newline`` set to a string, only that string ends a line.

    Lines come without their terminator unless ``keepends=True``. When the transport
    ends, a last line with no terminator is still delivered; then the stream raises
    :exc:`anyio.EndOfStream`. Items that are ``bytes`` are decoded with ``encoding`` and
    ``errors`` (see :class:`TextReceiveStream` for how a character cut off by the end of
    the stream is treated); items that are ``str`` are used as they are.

    A line longer than ``max_line_length`` characters (its terminator not counted) raises
    :exc:`LineTooLongError` as soon as it is known to be too long, so memory stays
    bounded by about ``max_line_length`` plus one chunk.

    Args:
        transport_stream: A byte receive stream, or an object receive stream of ``str``
            (such as a :class:`TextReceiveStream`).
        encoding: The character encoding of ``bytes`` items.
        errors: The decoding error scheme of ``bytes`` items.
        keepends: Whether each line keeps its terminator.
        newline: ``None`` for the boundaries of :meth:`str.splitlines`, or the exact
            string that ends a line (for example ``"\\n"`` or ``"\\0"``).
        max_line_length: The longest line accepted, in characters, or ``None`` for no
            limit.

    Raises:
        ValueError: If ``newline`` is an empty string or ``max_line_length`` is below 1.
        LookupError: If ``encoding`` is not a known codec.
    """

    def __init__(
        self,
        transport_stream: AnyByteReceiveStream | ObjectReceiveStream[str],
        *,
        encoding: str = "utf-8",
        errors: str = "strict",
        keepends: bool = False,
        newline: str | None = None,
        max_line_length: int | None = 65536,
    ) -> None:
        _check_newline(newline)
        if max_line_length is not None and max_line_length < 1:
            raise ValueError("max_line_length must be None or at least 1")
        self.transport_stream = transport_stream
        self.keepends = keepends
        self.newline = newline
        self.max_line_length = max_line_length
        self._decoder = _Decoder(encoding, errors)
        self._buffer = ""
        self._lines: deque[str] = deque()
        self._pending_error: LineTooLongError | None = None
        self._eof = False

    async def receive(self) -> str:
        """Return the next line.

        Raises:
            anyio.EndOfStream: When the transport has ended and every line was delivered.
            LineTooLongError: When a line exceeds ``max_line_length``.
            UnicodeDecodeError: On undecodable bytes with ``errors="strict"``.
        """
        lines = self._lines
        while not lines:
            if self._pending_error is not None:
                error, self._pending_error = self._pending_error, None
                raise error
            if self._eof:
                if not self._buffer:
                    raise EndOfStream
                # What _feed(final=True) kept back can only be an unterminated last line.
                lines.append(self._buffer)
                self._buffer = ""
                break
            try:
                item = await self.transport_stream.receive()
            except EndOfStream:
                self._eof = True
                self._feed(self._decoder.finish(), final=True)
                continue
            self._feed(item if isinstance(item, str) else self._decoder.feed(item), final=False)
        return lines.popleft()

    def _feed(self, text: str, *, final: bool) -> None:
        if not text and not final:
            return
        data = self._buffer + text if self._buffer else text
        newline = self.newline
        if newline is None:
            # Split twice in C rather than trim each line in Python: once with the
            # terminators to see where the complete lines end, once without them.
            with_ends = data.splitlines(keepends=True)
            rest = ""
            if with_ends:
                tail = with_ends[-1][-1]
                # An unterminated tail, or a "\r" that may be the first half of "\r\n",
                # stays buffered until more text (or the end of the stream) arrives.
                if tail not in _BOUNDARIES or (tail == "\r" and not final):
                    rest = with_ends.pop()
            if self.keepends:
                lines = with_ends
            else:
                lines = (data[: len(data) - len(rest)] if rest else data).splitlines()
            rest_length = len(rest) - 1 if rest.endswith("\r") else len(rest)
        else:
            lines = data.split(newline)
            rest = lines.pop()
            with_ends = [line + newline for line in lines]
            if self.keepends:
                lines = with_ends
            # At the end of the stream the tail can no longer begin a separator: all of
            # it is line content.
            rest_length = len(rest) if final else self._partial_separator_free_length(rest)

        limit = self.max_line_length
        if limit is not None and (rest_length > limit or max(map(len, lines), default=0) > limit):
            for index, item in enumerate(with_ends):
                length = _content_length(item) if newline is None else len(item) - len(newline)
                if length > limit:
                    self._overflow(lines[:index], "".join(with_ends[index:]) + rest)
                    return
            if rest_length > limit:
                self._overflow(lines, rest)
                return
        self._lines.extend(lines)
        self._buffer = rest

    def _partial_separator_free_length(self, rest: str) -> int:
        # The tail may end with the first characters of a multi-character separator;
        # those are not line content yet, so they do not count against the limit.
        newline = self.newline
        assert newline is not None
        for size in range(min(len(newline) - 1, len(rest)), 0, -1):
            if newline.startswith(rest[-size:]):
                return len(rest) - size
        return len(rest)

    def _overflow(self, good: list[str], buffered: str) -> None:
        assert self.max_line_length is not None
        # The lines before the over-long one are delivered first; the error is raised by
        # the receive that would have returned the over-long line.
        self._lines.extend(good)
        self._buffer = ""
        self._pending_error = LineTooLongError(self.max_line_length, buffered)

    async def aclose(self) -> None:
        """Close the transport stream and drop buffered text."""
        self._buffer = ""
        self._lines.clear()
        self._decoder.reset()
        await self.transport_stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The transport stream's typed attributes, passed through."""
        return self.transport_stream.extra_attributes
