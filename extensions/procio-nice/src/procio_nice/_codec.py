"""The worker's half of the JSON serializer: it runs inside every worker.

The worker program imports this module (and this package's ``__init__``) by name, so
it imports the standard library only: anything more, the modules of ``procio_workers``
that import anyio above all, would be imported by every worker as it starts.
The parent's half, :class:`procio_nice.JsonSerializer`, lives in ``_json``.

The wire format (segment 0 of each message, UTF-8 JSON, no out-of-band buffers):

- a call: ``{"function": "module:qualname", "args": [...]}``;
- a reply: ``{"value": ...}`` for a result, ``{"exception": {"type":
  "module.qualname", "message": "..."}}`` for an exception.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from typing import Any


def decode(segments: Sequence[Any]) -> Any:
    """Decode a message of one segment holding UTF-8 JSON (bytes or a memoryview)."""
    if len(segments) != 1:
        raise ValueError(f"a JSON message has exactly one segment, not {len(segments)}")
    return json.loads(bytes(segments[0]).decode("utf-8"))


def _resolve(reference: str) -> Any:
    module_name, _, qualname = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


class JsonCodec:
    """Decodes calls and encodes replies in the worker."""

    def loads(self, segments: Sequence[Any]) -> tuple[Callable[..., object], tuple[Any, ...]]:
        """Decode a call into the function and its arguments."""
        call = decode(segments)
        return _resolve(call["function"]), tuple(call["args"])

    def dumps(self, value: object) -> list[bytes]:
        """Encode a result or an exception."""
        if isinstance(value, BaseException):
            kind = type(value)
            info = {"type": f"{kind.__module__}.{kind.__qualname__}", "message": str(value)}
            return [json.dumps({"exception": info}).encode()]
        return [json.dumps({"value": value}).encode()]
