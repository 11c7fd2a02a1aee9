"""Line framing over a byte or text stream, with a bound on line length.

:class:`_Splitter` is the state machine: text goes in piece by piece, lines and errors
come out in order, each character is searched and copied a bounded number of times
however the text is cut. :class:`LineReceiveStream` is its I/O: it receives, decodes and
feeds the splitter, and hands out what comes out.
"""

from __future__ import annotations

import operator
import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from anyio import BrokenResourceError, EndOfStream
from anyio.abc import AnyByteReceiveStream, ObjectReceiveStream
from anyio.lowlevel import checkpoint

from ._text import _Decoder

# io's universal newlines: "\r\n" first, so that it is never taken for "\r" then "\n".
_UNIVERSAL = re.compile("(\r\n|\r|\n)")

#: How long a caller may drain lines already buffered before receive() yields to the
#: event loop (a cancel point and a schedule point). One per line would cost more than
#: the line itself; the transport's own receive is a checkpoint anyway.
_CHECKPOINT_INTERVAL = 200e-6


class LineTooLongError(ValueError):
    """A line grew past the stream's ``max_line_length``.

    The stream raises it once per over-long line, as soon as the line is known to be too
    long (so memory stays bounded), then skips the rest of that line: the next
    :meth:`~LineReceiveStream.receive` returns the line after it.

    Attributes:
        max_line_length: The limit that was exceeded.
        buffered: The start of the over-long line, without its terminator: what the
            stream had read of it, more than ``max_line_length`` characters and at most
            about one chunk more.
    """

    def __init__(self, max_line_length: int, buffered: str) -> None:
        super().__init__(
            f"line longer than max_line_length={max_line_length} characters "
            f"(its first {len(buffered)} characters are in .buffered; the rest of the "
            "line is skipped)"
        )
        self.max_line_length = max_line_length
        self.buffered = buffered

    def __reduce__(self) -> tuple[type[LineTooLongError], tuple[int, str]]:
        return (type(self), (self.max_line_length, self.buffered))


class LineDecodeError(UnicodeDecodeError):
    """Undecodable bytes interrupted a :class:`LineReceiveStream`.

    A :exc:`UnicodeDecodeError` (raised with ``errors="strict"``, or when an error
    handler gives up), raised after every complete line before the bad bytes was
    delivered. ``object[start:end]`` are the bad bytes and ``object[start:]``
    everything from them to the end of the chunk that held them, as in the codec's own
    error. The stream is broken afterwards: later receives raise
    :exc:`anyio.BrokenResourceError`.

    Attributes:
        buffered: The decoded start of the line the bad bytes interrupted (``""`` when
            they came right after a line boundary, or when that start was itself longer
            than ``max_line_length``: then :exc:`LineTooLongError` came first).
    """

    def __init__(
        self, encoding: str, object: bytes, start: int, end: int, reason: str, buffered: str = ""
    ) -> None:
        super().__init__(encoding, object, start, end, reason)
        self.buffered = buffered

    def __reduce__(self) -> tuple[type[LineDecodeError], tuple[str, bytes, int, int, str, str]]:
        return (
            type(self),
            (self.encoding, self.object, self.start, self.end, self.reason, self.buffered),
        )

    @classmethod
    def _from(cls, error: UnicodeDecodeError, buffered: str) -> LineDecodeError:
        return cls(error.encoding, error.object, error.start, error.end, error.reason, buffered)


def _check_newline(newline: object) -> None:
    if newline is not None and not (isinstance(newline, str) and newline):
        raise ValueError(f"newline must be None or a non-empty string, not {newline!r}")


def _separator_start(text: str, newline: str) -> int:
    """Return the length of the longest end of *text* that begins *newline*."""
    for size in range(min(len(newline) - 1, len(text)), 0, -1):
        if newline.startswith(text[-size:]):
            return size
    return 0


class _Splitter:
    """Frames lines out of text fed piece by piece; no I/O.

    Complete lines (and a :exc:`LineTooLongError` where an over-long line was) go to
    ``out`` in input order. The partial last line is kept as a list of pieces, joined
    once when its end arrives, so a line that comes a character at a time costs no more
    than one that comes at once.
    """

    __slots__ = (
        "_after_cr",
        "_carry",
        "_held",
        "_keepends",
        "_length",
        "_limit",
        "_newline",
        "_parts",
        "_skipping",
        "out",
    )

    def __init__(self, newline: str | None, keepends: bool, limit: int | None) -> None:
        self._newline = newline
        self._keepends = keepends
        self._limit = limit
        self.out: deque[str | LineTooLongError | LineDecodeError] = deque()
        # The start of the current line, in pieces, and its length.
        self._parts: list[str] = []
        self._length = 0
        # Inside an over-long line already reported: drop text until its end.
        self._skipping = False
        # Universal newlines: the text so far ended with a "\r" that ended a line; a
        # "\n" at the start of the next text belongs to that terminator.
        self._after_cr = False
        # ... and with keepends, that line, until its terminator is known.
        self._held: str | None = None
        # An explicit newline of several characters: the end of the text so far that
        # may be the first characters of one (not yet line content).
        self._carry = ""

    def feed(self, text: str) -> None:
        if not text:
            return
        if self._newline is None:
            self._feed_universal(text)
        else:
            self._feed_explicit(text, self._newline)

    def _feed_universal(self, text: str) -> None:
        if self._after_cr:
            self._after_cr = False
            crlf = text[0] == "\n"
            if crlf:
                text = text[1:]
            if self._held is not None:
                self.out.append(self._held + ("\r\n" if crlf else "\r"))
                self._held = None
            if not text:
                return
        ends: list[str] | None
        end = "\n"
        if "\r" in text:
            contents = text.split("\r\n")
            rest = "".join(contents)
            if "\r" in rest or "\n" in rest:
                # Lone "\r" or "\n" too: the general (and slower) split.
                pieces = _UNIVERSAL.split(text)
                contents, ends = pieces[::2], pieces[1::2]
            else:
                # Only "\r\n" (Windows text): plain splitting and searching, in C.
                ends, end = None, "\r\n"
        else:
            contents, ends = text.split("\n"), None
        tail = contents.pop()
        if text[-1] == "\r":
            # The line ended, but whether by "\r" or "\r\n" only the next text tells.
            self._after_cr = True
            if self._keepends:
                assert ends is not None
                last = contents.pop()
                ends.pop()
                if contents:
                    self._emit(contents, ends, end)
                self._held = self._end_line(last)
                return
        if contents:
            self._emit(contents, ends, end)
        self._keep(tail)

    def _feed_explicit(self, text: str, newline: str) -> None:
        if self._carry:
            text = self._carry + text
            self._carry = ""
        contents = text.split(newline)
        tail = contents.pop()
        if contents:
            self._emit(contents, None, newline)
        if len(newline) > 1 and tail:
            size = _separator_start(tail, newline)
            if size:
                self._carry = tail[-size:]
                tail = tail[:-size]
        self._keep(tail)

    def _end_line(self, content: str) -> str | None:
        """Complete the current line with *content*.

        Return the line, or None if it is not to be delivered (the end of a skipped
        line, or a line too long).
        """
        if self._skipping:
            self._skipping = False
            return None
        if self._parts:
            self._parts.append(content)
            content = "".join(self._parts)
            self._parts.clear()
            self._length = 0
        limit = self._limit
        if limit is not None and len(content) > limit:
            self.out.append(LineTooLongError(limit, content))
            return None
        return content

    def _emit(self, contents: list[str], ends: list[str] | None, end: str) -> None:
        # contents[i] is a whole line (the first completes the current one), ended by
        # ends[i], or by `end` when ends is None.
        first = self._end_line(contents[0])
        if first is None:
            del contents[0]
            if ends is not None:
                del ends[0]
            if not contents:
                return
        else:
            contents[0] = first
        limit = self._limit
        if limit is not None and max(map(len, contents)) > limit:
            self._emit_checked(contents, ends, end, limit)
        elif not self._keepends:
            self.out.extend(contents)
        elif ends is None:
            self.out.extend([content + end for content in contents])
        else:
            self.out.extend(map(operator.add, contents, ends))

    def _emit_checked(
        self, contents: list[str], ends: list[str] | None, end: str, limit: int
    ) -> None:
        out = self.out
        keepends = self._keepends
        for index, content in enumerate(contents):
            if len(content) > limit:
                out.append(LineTooLongError(limit, content))
            elif keepends:
                out.append(content + (end if ends is None else ends[index]))
            else:
                out.append(content)

    def _keep(self, tail: str) -> None:
        # The start of a line whose end has not arrived yet.
        if not tail or self._skipping:
            return
        self._parts.append(tail)
        self._length += len(tail)
        limit = self._limit
        if limit is not None and self._length > limit:
            self.out.append(LineTooLongError(limit, "".join(self._parts)))
            self._parts.clear()
            self._length = 0
            self._skipping = True

    def end(self) -> str:
        """The text has ended: deliver the held line; return the unterminated rest.

        The rest is checked against the limit first: what was held back as the possible
        start of a separator is line content now. An over-long rest is reported here
        and ``""`` returned.
        """
        if self._after_cr:
            self._after_cr = False
            if self._held is not None:
                self.out.append(self._held + "\r")
                self._held = None
        rest = "".join(self._parts) + self._carry
        self._parts.clear()
        self._length = 0
        self._carry = ""
        if self._skipping:
            # The over-long line ends here; what is left of it was skipped.
            self._skipping = False
            return ""
        limit = self._limit
        if limit is not None and len(rest) > limit:
            self.out.append(LineTooLongError(limit, rest))
            return ""
        return rest

    def finish(self) -> None:
        """The stream has ended: a last line without a terminator is still a line."""
        rest = self.end()
        if rest:
            self.out.append(rest)

    def clear(self) -> None:
        self.end()
        self.out.clear()


class LineReceiveStream(ObjectReceiveStream[str]):
    """Receives whole lines from a byte stream or a text stream.

    With the default ``newline=None`` lines end as in :mod:`io`'s universal newlines: at
    ``"\\n"``, ``"\\r\\n"`` or ``"\\r"``, and nowhere else (a form feed, ``"\\x85"`` or
    ``"\\u2028"`` is part of its line). A ``"\\r\\n"`` split between two chunks is still
    one boundary. With ``newline`` set to a string, only that string ends a line.

    Lines come without their terminator unless ``keepends=True``. When the transport
    ends, a last line with no terminator is still delivered; then the stream raises
    :exc:`anyio.EndOfStream`. Items that are ``bytes`` are decoded with ``encoding`` and
    ``errors``; items that are ``str`` are used as they are.

    A line longer than ``max_line_length`` characters (its terminator not counted) raises
    :exc:`LineTooLongError` once, as soon as it is known to be too long, so memory stays
    bounded by about ``max_line_length`` plus one chunk. The rest of that line is skipped
    and the next receive returns the line after it; no other line is lost.

    Undecodable bytes (with ``errors="strict"``) raise :exc:`LineDecodeError` after every
    complete line before them was delivered; the error holds the start of the line they
    interrupted and the bad bytes. The same happens when a text transport raises
    :exc:`UnicodeDecodeError`. Every later receive raises
    :exc:`anyio.BrokenResourceError`.

    Args:
        transport_stream: A byte receive stream, or an object receive stream of ``str``
            (such as a :class:`TextReceiveStream`).
        encoding: The character encoding of ``bytes`` items.
        errors: The decoding error scheme of ``bytes`` items.
        keepends: Whether each line keeps its terminator.
        newline: ``None`` for universal newlines (``"\\n"``, ``"\\r\\n"``, ``"\\r"``), or
            the exact string that ends a line (for example ``"\\n"`` or ``"\\0"``).
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
        self._splitter = _Splitter(newline, keepends, max_line_length)
        # Set once the transport has ended or its text could not be decoded.
        self._ended = False
        self._failure: LineDecodeError | None = None
        self._last_checkpoint = time.perf_counter()

    async def receive(self) -> str:
        """Return the next line.

        Raises:
            anyio.EndOfStream: When the transport has ended and every line was delivered.
            LineTooLongError: Once for each line longer than ``max_line_length``.
            LineDecodeError: On undecodable bytes with ``errors="strict"``, after the
                lines before them.
            anyio.BrokenResourceError: On every receive after a :exc:`LineDecodeError`.
        """
        out = self._splitter.out
        if out:
            now = time.perf_counter()
            if now - self._last_checkpoint > _CHECKPOINT_INTERVAL:
                await checkpoint()
                self._last_checkpoint = time.perf_counter()
        while not out:
            if self._ended:
                if self._failure is not None:
                    raise BrokenResourceError(
                        "the stream cannot go on after undecodable input (see the cause)"
                    ) from self._failure
                raise EndOfStream
            await self._receive_more()
            self._last_checkpoint = time.perf_counter()
        item = out.popleft()
        if isinstance(item, str):
            return item
        raise item

    async def _receive_more(self) -> None:
        splitter = self._splitter
        decoder = self._decoder
        try:
            item = await self.transport_stream.receive()
        except EndOfStream:
            self._ended = True
            splitter.feed(decoder.finish())
            if decoder.error is None:
                splitter.finish()
                return
            self._fail(decoder.error)
            return
        except UnicodeDecodeError as error:
            # A text transport that could not decode: the same as our own decoder.
            self._ended = True
            self._fail(error)
            return
        if isinstance(item, str):
            splitter.feed(item)
            return
        splitter.feed(decoder.feed(item))
        if decoder.error is not None:
            self._ended = True
            self._fail(decoder.error)

    def _fail(self, error: UnicodeDecodeError) -> None:
        self._failure = LineDecodeError._from(error, self._splitter.end())
        self._splitter.out.append(self._failure)

    async def aclose(self) -> None:
        """Close the transport stream and drop buffered text."""
        self._splitter.clear()
        self._decoder.reset()
        await self.transport_stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The transport stream's typed attributes, passed through."""
        return self.transport_stream.extra_attributes
