"""Static types of the public surface: mypy --strict checks these assert_type lines.

At run time assert_type() returns its argument unchanged, so the test also runs the
calls for real, on every backend.
"""

from __future__ import annotations

import sys

import pytest
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from procio_text import (
    LineDecodeError,
    LineReceiveStream,
    LineTooLongError,
    TextReceiveStream,
    TextSendStream,
)

from ._streams import Sink, feed

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # typing.assert_type arrived in Python 3.11
    from typing_extensions import assert_type

pytestmark = pytest.mark.anyio


async def test_public_types() -> None:
    text = TextReceiveStream(feed([b"a\n"]))
    assert_type(text, TextReceiveStream)
    assert isinstance(text, ObjectReceiveStream)
    assert_type(await text.receive(), str)

    lines = LineReceiveStream(feed([b"a\nb"]), keepends=True)
    assert_type(await lines.receive(), str)
    async for line in lines:
        assert_type(line, str)

    sender = TextSendStream(Sink(), encoding="utf-16")
    assert isinstance(sender, ObjectSendStream)
    assert_type(await sender.send("x"), None)

    error = LineTooLongError(3, "abcd")
    assert_type(error.buffered, str)
    assert_type(error.max_line_length, int)

    undecodable = LineDecodeError("utf-8", b"a\xff", 1, 2, "invalid start byte", "a")
    assert isinstance(undecodable, UnicodeDecodeError)
    assert_type(undecodable.buffered, str)
    assert_type(undecodable.object, bytes)
    assert_type(undecodable.start, int)
