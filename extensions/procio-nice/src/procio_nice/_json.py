"""Calls and results as JSON: a serializer for the parent, a codec for the worker.

The wire format (segment 0 of each message, UTF-8 JSON, no out-of-band buffers):

- a call: ``{"function": "module:qualname", "args": [...]}``;
- a reply: ``{"value": ...}`` for a result, ``{"exception": {"type":
  "module.qualname", "message": "..."}}`` for an exception.

Only importable functions and JSON values travel; an exception comes back as its own
class if that class is a built-in exception, else as :class:`RemoteJsonError`.
"""

from __future__ import annotations

import builtins
import importlib
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from procio_workers.abc import Buffer, Serializer


class RemoteJsonError(Exception):
    """An exception from the worker whose class is not a built-in one."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(f"{type_name}: {message}")
        self.type_name = type_name
        self.message = message


def _reference(func: Callable[..., object]) -> str:
    module = getattr(func, "__module__", None)
    qualname = getattr(func, "__qualname__", None)
    if not module or not qualname or "<" in qualname:
        raise TypeError(f"{func!r} has no import name; JSON calls need an importable function")
    return f"{module}:{qualname}"


def _resolve(reference: str) -> Any:
    module_name, _, qualname = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj


def _decode(segments: Sequence[Any]) -> Any:
    if len(segments) != 1:
        raise ValueError(f"a JSON message has exactly one segment, not {len(segments)}")
    return json.loads(bytes(segments[0]).decode("utf-8"))


class JsonSerializer(Serializer):
    """JSON on the wire: readable, language-neutral, and only for JSON values."""

    worker_codec: ClassVar[str] = "procio_nice._json:JsonCodec"

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        """Encode the call as ``{"function": ..., "args": [...]}``."""
        return [json.dumps({"function": _reference(func), "args": list(args)}).encode()]

    def load_reply(self, segments: Sequence[memoryview]) -> object:
        """Decode a result, or rebuild an exception."""
        reply = _decode(segments)
        if "exception" in reply:
            info = reply["exception"]
            type_name, message = str(info["type"]), str(info["message"])
            module, _, name = type_name.rpartition(".")
            candidate = getattr(builtins, name, None) if module == "builtins" else None
            if isinstance(candidate, type) and issubclass(candidate, Exception):
                return candidate(message)
            return RemoteJsonError(type_name, message)
        return reply["value"]


class JsonCodec:
    """The worker's half of :class:`JsonSerializer`."""

    def loads(self, segments: Sequence[Any]) -> tuple[Callable[..., object], tuple[Any, ...]]:
        """Decode a call into the function and its arguments."""
        call = _decode(segments)
        return _resolve(call["function"]), tuple(call["args"])

    def dumps(self, value: object) -> list[bytes]:
        """Encode a result or an exception."""
        if isinstance(value, BaseException):
            kind = type(value)
            info = {"type": f"{kind.__module__}.{kind.__qualname__}", "message": str(value)}
            return [json.dumps({"exception": info}).encode()]
        return [json.dumps({"value": value}).encode()]
