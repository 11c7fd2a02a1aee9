"""The control messages (HELLO, INIT, READY, the ERROR header), decoded in one place."""

from __future__ import annotations

import json
from typing import Any

import pytest
from procio_workers import _wire


@pytest.mark.parametrize(
    ("segments", "complaint"),
    [
        ([], "HELLO must have one segment, not 0"),
        ([b"{}", b"{}"], "HELLO must have one segment, not 2"),
        ([b"\xff\xfe not json"], "HELLO is not JSON"),
        ([b'{"protocol": 2'], "HELLO is not JSON"),
        ([b"[1, 2]"], "HELLO must be a JSON object"),
        ([b'"text"'], "HELLO must be a JSON object"),
    ],
)
def test_a_malformed_control_message_is_a_protocol_error(
    segments: list[bytes], complaint: str
) -> None:
    with pytest.raises(_wire.ProtocolError, match=complaint):
        _wire.decode_control(_wire.HELLO, segments)


def test_a_control_message_round_trips_and_keeps_unknown_keys() -> None:
    ready: _wire.Ready = {"ok": False, "error": "no codec \u00e9"}
    decoded = _wire.decode_control(_wire.READY, [bytearray(_wire.encode_control(ready))])
    assert decoded == {"ok": False, "error": "no codec \u00e9"}
    extra = json.dumps({"ok": True, "future": [1]}).encode()
    assert _wire.decode_control(_wire.READY, [extra]) == {"ok": True, "future": [1]}


@pytest.mark.parametrize(
    ("hello", "versions"),
    [
        ({"protocol": 2, "protocols": [1, 2], "pid": 1}, [1, 2]),
        ({"protocol": 1, "pid": 1}, [1]),  # version 1: "protocol" alone
        ({"protocol": 9, "protocols": [2, 9], "pid": 1}, [2]),
        ({"protocol": 9, "pid": 1}, []),
        ({"protocol": True, "pid": 1}, []),  # a JSON true is not version 1
        ({"protocols": "12", "pid": 1}, []),
        ({"protocols": [1.0, "2", None], "pid": 1}, []),
    ],
)
def test_hello_versions_are_those_both_sides_speak(
    hello: dict[str, Any], versions: list[int]
) -> None:
    assert _wire.hello_versions(hello) == versions


@pytest.mark.parametrize(
    ("header", "index"),
    [
        ({"stage": "call", "type": "builtins.ValueError", "index": 3}, 3),
        ({"stage": "call", "type": "builtins.ValueError", "index": 0}, 0),
        ({"stage": "arguments", "type": "builtins.TypeError"}, None),
        ({"stage": "call", "type": "x", "index": -1}, None),
        ({"stage": "call", "type": "x", "index": False}, None),
        ({"stage": "call", "type": "x", "index": "2"}, None),
        ({"stage": "call", "type": "x", "index": 2.0}, None),
    ],
)
def test_an_error_index_is_a_non_negative_integer_or_none(
    header: dict[str, Any], index: int | None
) -> None:
    assert _wire.error_index(header) == index
