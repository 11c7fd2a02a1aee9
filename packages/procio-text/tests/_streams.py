"""Byte and text streams for feeding the text layer exact chunks in tests."""

from __future__ import annotations

import io
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, SupportsIndex, TypeVar

import anyio
from anyio import ClosedResourceError, EndOfStream
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from hypothesis import strategies as st

T = TypeVar("T", bytes, str)
E = TypeVar("E", bound=BaseException)


class Chunks(ObjectReceiveStream[T], Generic[T]):
    """Yields the given chunks in order, then ends; each receive is a checkpoint."""

    def __init__(self, chunks: Iterable[T]) -> None:
        self._chunks: deque[T] = deque(chunks)
        self.closed = False

    async def receive(self) -> T:
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise ClosedResourceError
        if not self._chunks:
            raise EndOfStream
        return self._chunks.popleft()

    async def aclose(self) -> None:
        self.closed = True

    @property
    def remaining(self) -> int:
        """How many chunks were never received."""
        return len(self._chunks)


class Sink(ObjectSendStream[bytes]):
    """Collects what is sent, one item per send."""

    def __init__(self) -> None:
        self.items: list[bytes] = []
        self.closed = False

    async def send(self, item: bytes) -> None:
        await anyio.lowlevel.checkpoint()
        if self.closed:
            raise ClosedResourceError
        self.items.append(item)

    async def aclose(self) -> None:
        self.closed = True

    @property
    def data(self) -> bytes:
        return b"".join(self.items)


def feed(chunks: Iterable[T]) -> Chunks[T]:
    """Return a receive stream that yields *chunks* in order, then ends."""
    return Chunks(chunks)


async def receive_until(
    stream: ObjectReceiveStream[str], error_type: type[E]
) -> tuple[list[str], E]:
    """Receive until *error_type* is raised; return what came before, and the error.

    The end of the stream (or any other error) propagates: the test fails.
    """
    received: list[str] = []
    while True:
        try:
            received.append(await stream.receive())
        except error_type as error:
            return received, error


def split(data: T, cuts: Sequence[int]) -> list[T]:
    """Cut *data* at the given offsets (duplicates give empty chunks)."""
    points = sorted(min(max(cut, 0), len(data)) for cut in cuts)
    chunks = []
    previous = 0
    for point in points:
        chunks.append(data[previous:point])
        previous = point
    chunks.append(data[previous:])
    return chunks


def reference_lines(text: str, newline: str | None = None) -> list[tuple[str, str]]:
    """Split *text* into ``(content, terminator)`` pairs, independently of procio.

    ``newline=None`` means the universal newlines of :mod:`io` (``"\\n"``, ``"\\r"``,
    ``"\\r\\n"`` and nothing else), taken from ``io.StringIO(newline="")``, which keeps
    the terminators as they were. An unterminated last line has the terminator ``""``.
    """
    if newline is None:
        pairs = []
        for line in io.StringIO(text, newline="").readlines():
            if line.endswith("\r\n"):
                pairs.append((line[:-2], "\r\n"))
            elif line[-1] in "\r\n":
                pairs.append((line[:-1], line[-1]))
            else:
                pairs.append((line, ""))
        return pairs
    pieces = text.split(newline)
    last = pieces.pop()
    return [(piece, newline) for piece in pieces] + ([(last, "")] if last else [])


def expected_lines(text: str, newline: str | None = None, keepends: bool = False) -> list[str]:
    """The lines a line stream must deliver for *text* (see :func:`reference_lines`)."""
    return [
        content + terminator if keepends else content
        for content, terminator in reference_lines(text, newline)
    ]


class Tracked(str):
    """A string that counts the characters each string operation on it touches.

    Handed to a line stream as its input, it shows how much work the stream does on
    the text it was given: an implementation that re-copies or re-scans its buffered
    partial line on every chunk touches a number of characters that grows with the
    square of the line's length. Results are plain ``str`` (not counted further).
    """

    touched = 0

    @staticmethod
    def _tally(*strings: object) -> None:
        for string in strings:
            if isinstance(string, str):
                Tracked.touched += len(string)

    def __add__(self, other: str) -> str:
        Tracked._tally(self, other)
        return str(self) + str(other)

    def __radd__(self, other: str) -> str:
        Tracked._tally(other, self)
        return str(other) + str(self)

    def __contains__(self, key: str) -> bool:  # type: ignore[override]
        Tracked._tally(self)
        return key in str(self)

    def __getitem__(self, key: SupportsIndex | slice) -> str:
        result = str(self)[key]
        Tracked._tally(result)
        return result

    def split(self, sep: str | None = None, maxsplit: SupportsIndex = -1) -> list[str]:
        Tracked._tally(self)
        return str(self).split(sep, maxsplit)

    def splitlines(self, keepends: bool = False) -> list[str]:
        Tracked._tally(self)
        return str(self).splitlines(keepends)

    def find(self, sub: str, *bounds: SupportsIndex | None) -> int:
        Tracked._tally(self)
        return str(self).find(sub, *bounds)

    def endswith(self, suffix: str | tuple[str, ...], *bounds: SupportsIndex | None) -> bool:
        Tracked._tally(self)
        return str(self).endswith(suffix, *bounds)

    def startswith(self, prefix: str | tuple[str, ...], *bounds: SupportsIndex | None) -> bool:
        Tracked._tally(self)
        return str(self).startswith(prefix, *bounds)


cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=24)
