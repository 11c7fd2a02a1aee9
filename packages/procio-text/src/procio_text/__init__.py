"""Text decoding, encoding and line framing over any AnyIO byte stream.

``TextReceiveStream``, ``TextSendStream``, ``TextStream`` and ``TextConnectable`` keep the
names, arguments and behaviour of :mod:`anyio.streams.text`, so code moves over by
changing an import. ``LineReceiveStream`` frames lines with a bound on their length;
``LineTooLongError`` and ``LineDecodeError`` are what it raises on bad input.
"""

from __future__ import annotations

from ._lines import LineDecodeError as LineDecodeError
from ._lines import LineReceiveStream as LineReceiveStream
from ._lines import LineTooLongError as LineTooLongError
from ._text import TextConnectable as TextConnectable
from ._text import TextReceiveStream as TextReceiveStream
from ._text import TextSendStream as TextSendStream
from ._text import TextStream as TextStream

__all__ = [
    "TextReceiveStream",
    "TextSendStream",
    "TextStream",
    "TextConnectable",
    "LineReceiveStream",
    "LineTooLongError",
    "LineDecodeError",
]
