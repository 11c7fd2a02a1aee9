"""The example frames of the worker protocol page are what the implementation does.

Each example carries a machine-readable comment (kind, segment count, segments in
hexadecimal) and a block of the frame's bytes in hexadecimal. The encoder must produce
exactly those bytes, and the reader must turn them back into the same message.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from procio_workers import _wire

PAGE = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"
_EXAMPLE = re.compile(
    r"<!-- frame: kind=(\d+) count=(\d+) segments=([0-9a-f,]*) -->\n```text\n(.*?)```",
    re.DOTALL,
)


def _examples() -> list[tuple[int, list[bytes], bytes]]:
    found = []
    for kind, count, segments, block in _EXAMPLE.findall(PAGE.read_text(encoding="utf-8")):
        parts = [bytes.fromhex(s) for s in segments.split(",")] if int(count) else []
        assert len(parts) == int(count)
        found.append((int(kind), parts, bytes.fromhex(block.replace("\n", " "))))
    return found


EXAMPLES = _examples() if PAGE.exists() else []


def test_the_page_has_examples_of_several_kinds() -> None:
    if not PAGE.exists():
        pytest.skip("the documentation is not beside this checkout")
    kinds = {kind for kind, _, _ in EXAMPLES}
    assert {_wire.SHUTDOWN, _wire.HELLO, _wire.CALL, _wire.RESULT} <= kinds


@pytest.mark.parametrize(("kind", "segments", "frame"), EXAMPLES)
def test_an_example_frame_is_what_the_encoder_writes(
    kind: int, segments: list[bytes], frame: bytes
) -> None:
    written = b"".join(bytes(memoryview(b).cast("B")) for b in _wire.encode_frame(kind, segments))
    assert written == frame


@pytest.mark.parametrize(("kind", "segments", "frame"), EXAMPLES)
def test_an_example_frame_reads_back_as_its_message(
    kind: int, segments: list[bytes], frame: bytes
) -> None:
    # Fed a byte at a time, as a pipe may hand it over.
    reader = _wire.FrameReader()
    for i in range(len(frame)):
        reader.feed(frame[i : i + 1])
    assert len(reader.frames) == 1
    decoded = reader.frames.popleft()
    assert decoded.kind == kind
    assert [bytes(s) for s in decoded.segments] == segments
    assert not reader.mid_frame
