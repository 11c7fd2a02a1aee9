"""Byte and text streams for feeding the text layer exact chunks in tests."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Generic, TypeVar

import anyio
from anyio import ClosedResourceError, EndOfStream
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from hypothesis import strategies as st

T = TypeVar("T", bytes, str)


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


cuts = st.lists(st.integers(min_value=0, max_value=4096), max_size=24)
