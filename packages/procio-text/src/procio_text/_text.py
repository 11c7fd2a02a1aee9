"""Text streams over AnyIO byte streams, with AnyIO's names and arguments."""

from __future__ import annotations

import codecs
import sys
from collections.abc import Callable, Mapping
from dataclasses import InitVar, dataclass, field
from typing import TYPE_CHECKING, Any, NoReturn

from anyio import BrokenResourceError, EndOfStream
from anyio.abc import (
    AnyByteReceiveStream,
    AnyByteSendStream,
    AnyByteStream,
    AnyByteStreamConnectable,
    ObjectReceiveStream,
    ObjectSendStream,
    ObjectStream,
    ObjectStreamConnectable,
)

if TYPE_CHECKING:
    from typing_extensions import Buffer

if sys.version_info >= (3, 12):
    from typing import override
else:  # typing.override arrived in Python 3.12
    from typing_extensions import override


_BYTE_ORDER_MARKS = {
    "utf-16": (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE),
    "utf-32": (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE),
}


class _ByteOrderSniffingDecoder(codecs.IncrementalDecoder):
    """Decodes "utf-16"/"utf-32" the way ``bytes.decode`` does, but incrementally.

    The standard library's incremental decoders for these two codecs raise when the
    data does not start with a byte order mark, while ``bytes.decode`` falls back to the
    machine's native order. A stream should not decode differently from the same bytes
    decoded at once, so this decoder sniffs the mark itself, then hands every byte to
    the fixed-order decoder.
    """

    def __init__(self, family: str, errors: str = "strict") -> None:
        super().__init__(errors)
        self._family = family
        self._little, self._big = _BYTE_ORDER_MARKS[family]
        self._head = b""
        self._inner: codecs.IncrementalDecoder | None = None

    def decode(self, input: Buffer, final: bool = False) -> str:
        if self._inner is not None:
            return self._inner.decode(input, final)
        data = self._head + bytes(input)
        width = len(self._little)
        if len(data) < width and not final:
            self._head = data
            return ""
        self._head = b""
        if data.startswith(self._little):
            order, data = "le", data[width:]
        elif data.startswith(self._big):
            order, data = "be", data[width:]
        else:
            order = "le" if sys.byteorder == "little" else "be"
        self._inner = codecs.getincrementaldecoder(f"{self._family}-{order}")(self.errors)
        return self._inner.decode(data, final)

    def reset(self) -> None:
        self._head = b""
        self._inner = None

    def getstate(self) -> tuple[bytes, int]:
        if self._inner is not None:
            return self._inner.getstate()
        return (self._head, 0)

    def setstate(self, state: tuple[bytes, int]) -> None:
        if self._inner is not None:
            self._inner.setstate(state)
        else:
            self._head = state[0]


def _make_decoder(encoding: str, errors: str) -> codecs.IncrementalDecoder:
    # Looking the codec up eagerly makes an unknown encoding fail where the stream is
    # built (LookupError), not at the first receive.
    name = codecs.lookup(encoding).name
    if name in _BYTE_ORDER_MARKS:
        return _ByteOrderSniffingDecoder(name, errors)
    return codecs.getincrementaldecoder(encoding)(errors=errors)


def _make_encoder(encoding: str, errors: str) -> codecs.IncrementalEncoder:
    return codecs.getincrementalencoder(encoding)(errors=errors)


class _Decoder:
    """Incremental decoding with the rules shared by every text stream.

    Bytes still held by the decoder when the stream ends are flushed with ``final=True``,
    so they obey ``errors``: ``strict`` raises :exc:`UnicodeDecodeError`, ``replace``
    yields U+FFFD. Nothing is dropped silently.

    When a chunk holds undecodable bytes (``errors="strict"``, or a handler that gives
    up), :meth:`feed` and :meth:`finish` still return the text decoded before them and
    keep the codec's error in :attr:`error`; the stream raises it once the text has been
    delivered (:meth:`fail`), and from then on decodes nothing more.
    """

    __slots__ = ("_decode", "_decoder", "_fragile", "_reported", "error")

    def __init__(self, encoding: str, errors: str) -> None:
        self._decoder = decoder = _make_decoder(encoding, errors)
        self._decode = decoder.decode
        # The decoders written in Python on BufferedIncrementalDecoder (UTF-8, -16, -32,
        # -7...) change nothing when a call fails, and stateless ones (the charmaps)
        # have nothing to change. The CJK decoders (in C) drop the bytes they held and
        # may move their shift state (ISO-2022) even on failure: their state is taken
        # before each chunk, so that the text before bad bytes can be decoded again.
        self._fragile = not (
            isinstance(decoder, (codecs.BufferedIncrementalDecoder, _ByteOrderSniffingDecoder))
            or type(decoder).getstate is codecs.IncrementalDecoder.getstate
        )
        self.error: UnicodeDecodeError | None = None
        self._reported = False

    def feed(self, chunk: bytes) -> str:
        flag = self._decoder.getstate()[1] if self._fragile else None
        try:
            return self._decode(chunk)
        except UnicodeDecodeError as error:
            self.error = error
            return self._decode_before(error, flag)

    def finish(self) -> str:
        flag = self._decoder.getstate()[1] if self._fragile else None
        try:
            return self._decode(b"", final=True)
        except UnicodeDecodeError as error:
            self.error = error
            return self._decode_before(error, flag)
        finally:
            self._decoder.reset()

    def _decode_before(self, error: UnicodeDecodeError, flag: int | None) -> str:
        # The codec's error names the bytes it was decoding (what it had held back,
        # then the new chunk) and where the bad ones start; everything before that is
        # valid. Decode those bytes again from an empty buffer and the codec's other
        # state (a byte order, a shift state) as it was before the chunk.
        #
        # Decoded as final: nothing is decoded after the error, so what the codec would
        # hold back at the end of those bytes (the start of a sequence that the bad
        # bytes cut) is handled by ``errors`` there, as ``bytes.decode`` handles it up to
        # the bad bytes. A lenient handler may have turned such bytes into text before
        # it gave up on later ones.
        data = error.object
        if error.start <= 0 or not isinstance(data, (bytes, bytearray)):
            return ""
        decoder = self._decoder
        before = data[: error.start]
        state = decoder.getstate()[1] if flag is None else flag
        for final in (True, False):
            try:
                decoder.setstate((b"", state))
                return decoder.decode(before, final)
            except UnicodeError:  # strict on a cut sequence, or errors reported otherwise
                continue
        return ""

    def fail(self) -> NoReturn:
        """Raise :attr:`error` the first time, then :exc:`~anyio.BrokenResourceError`."""
        error = self.error
        assert error is not None
        if self._reported:
            raise BrokenResourceError(
                "the stream cannot go on after undecodable input (see the cause)"
            ) from error
        self._reported = True
        raise error

    def reset(self) -> None:
        self._decoder.reset()


@dataclass(eq=False)
class TextReceiveStream(ObjectReceiveStream[str]):
    """Decodes the bytes of a byte stream into strings.

    A drop-in replacement for :class:`anyio.streams.text.TextReceiveStream`: each
    ``receive()`` returns the characters completed by the next chunk of bytes, as soon
    as they arrive. A character split across chunks is held back until it is whole.

    When the transport ends while part of a character is still held, the partial
    character obeys ``errors``: with ``"strict"`` the receive raises
    :exc:`UnicodeDecodeError`, with ``"replace"`` it yields ``"\\ufffd"``.

    Undecodable bytes lose nothing before them: every character decoded before the bad
    bytes is returned first, then the next receive raises the codec's
    :exc:`UnicodeDecodeError`. In it, ``error.object[error.start:error.end]`` are the
    bad bytes and ``error.object[error.start:]`` everything from them to the end of
    the chunk that held them. The stream is then broken: every later receive raises
    :exc:`anyio.BrokenResourceError` (caused by that error) and reads nothing more from
    the transport.

    Args:
        transport_stream: Any byte receive stream (or object stream of ``bytes``).
        encoding: The character encoding (any codec :mod:`codecs` knows).
        errors: The decoding error scheme (``"strict"``, ``"replace"``, ``"ignore"``, ...).
    """

    transport_stream: AnyByteReceiveStream
    encoding: InitVar[str] = "utf-8"
    errors: InitVar[str] = "strict"
    _decoder: _Decoder = field(init=False, repr=False)

    def __post_init__(self, encoding: str, errors: str) -> None:
        self._decoder = _Decoder(encoding, errors)

    async def receive(self) -> str:
        """Return the next piece of decoded text.

        Raises:
            anyio.EndOfStream: When the transport has ended and no text is left.
            UnicodeDecodeError: On invalid input with ``errors="strict"``, including an
                incomplete character at the end of the stream, once the text decoded
                before it has been returned.
            anyio.BrokenResourceError: On every receive after that error.
        """
        decoder = self._decoder
        while True:
            if decoder.error is not None:
                decoder.fail()
            try:
                chunk = await self.transport_stream.receive()
            except EndOfStream:
                text = decoder.finish()
                if text:
                    return text
                if decoder.error is not None:
                    decoder.fail()
                raise

            text = decoder.feed(chunk)
            if text:
                return text

    async def aclose(self) -> None:
        """Close the transport stream and forget any partial character."""
        self._decoder.reset()
        await self.transport_stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The transport stream's typed attributes, passed through."""
        return self.transport_stream.extra_attributes


@dataclass(eq=False)
class TextSendStream(ObjectSendStream[str]):
    """Encodes strings and sends them as bytes on a byte stream.

    A drop-in replacement for :class:`anyio.streams.text.TextSendStream`. The encoder
    is incremental, so encodings with a byte order mark (``utf-16``, ``utf-32``) write
    it once, at the start of the stream, not on every send.

    Args:
        transport_stream: Any byte send stream (or object stream of ``bytes``).
        encoding: The character encoding.
        errors: The encoding error scheme (``"strict"``, ``"replace"``,
            ``"backslashreplace"``, ...).
    """

    transport_stream: AnyByteSendStream
    encoding: InitVar[str] = "utf-8"
    errors: str = "strict"
    _encoder: codecs.IncrementalEncoder = field(init=False, repr=False)

    def __post_init__(self, encoding: str) -> None:
        self._encoder = _make_encoder(encoding, self.errors)

    async def send(self, item: str) -> None:
        """Encode *item* and send the bytes.

        Raises:
            UnicodeEncodeError: If *item* cannot be encoded with ``errors="strict"``;
                nothing is sent in that case.
            TypeError: If *item* is not a string.
        """
        if not isinstance(item, str):
            raise TypeError(f"TextSendStream.send() takes str, not {type(item).__name__}")
        encoded = self._encoder.encode(item)
        if encoded:
            await self.transport_stream.send(encoded)

    async def aclose(self) -> None:
        """Close the transport stream."""
        await self.transport_stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """The transport stream's typed attributes, passed through."""
        return self.transport_stream.extra_attributes


@dataclass(eq=False)
class TextStream(ObjectStream[str]):
    """A bidirectional text stream over a bidirectional byte stream.

    A drop-in replacement for :class:`anyio.streams.text.TextStream`: receives decode as
    :class:`TextReceiveStream` does and sends encode as :class:`TextSendStream` does.
    Typed attributes of both directions are available; on a conflict the receive side's
    value wins.

    Args:
        transport_stream: Any bidirectional byte stream.
        encoding: The character encoding for both directions.
        errors: The error scheme for both directions.
    """

    transport_stream: AnyByteStream
    encoding: InitVar[str] = "utf-8"
    errors: InitVar[str] = "strict"
    _receive_stream: TextReceiveStream = field(init=False, repr=False)
    _send_stream: TextSendStream = field(init=False, repr=False)

    def __post_init__(self, encoding: str, errors: str) -> None:
        self._receive_stream = TextReceiveStream(
            self.transport_stream, encoding=encoding, errors=errors
        )
        self._send_stream = TextSendStream(self.transport_stream, encoding=encoding, errors=errors)

    async def receive(self) -> str:
        """Return the next piece of decoded text (see :meth:`TextReceiveStream.receive`)."""
        return await self._receive_stream.receive()

    async def send(self, item: str) -> None:
        """Encode and send *item* (see :meth:`TextSendStream.send`)."""
        await self._send_stream.send(item)

    async def send_eof(self) -> None:
        """Close the sending direction of the transport stream."""
        await self.transport_stream.send_eof()

    async def aclose(self) -> None:
        """Close the transport stream."""
        self._receive_stream._decoder.reset()
        await self.transport_stream.aclose()

    @property
    def extra_attributes(self) -> Mapping[Any, Callable[[], Any]]:
        """Typed attributes of both directions, the receive side's first."""
        return {
            **self._send_stream.extra_attributes,
            **self._receive_stream.extra_attributes,
        }


class TextConnectable(ObjectStreamConnectable[str]):
    """Connects through a byte stream connectable and wraps the result in a TextStream.

    A drop-in replacement for :class:`anyio.streams.text.TextConnectable`, which also
    takes the encoding and error scheme that AnyIO's version fixes at UTF-8/strict.

    Args:
        connectable: The byte stream endpoint to connect through.
        encoding: The character encoding of the connected streams.
        errors: The error scheme of the connected streams.
    """

    def __init__(
        self,
        connectable: AnyByteStreamConnectable,
        encoding: str = "utf-8",
        errors: str = "strict",
    ) -> None:
        # Fail on an unknown codec now rather than on the first connect.
        codecs.lookup(encoding)
        self.connectable = connectable
        self.encoding = encoding
        self.errors = errors

    @override
    async def connect(self) -> TextStream:
        """Connect and return a :class:`TextStream` over the new byte stream."""
        stream = await self.connectable.connect()
        return TextStream(stream, encoding=self.encoding, errors=self.errors)
