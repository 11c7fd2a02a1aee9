"""Calls and results as JSON, the parent's half: :class:`JsonSerializer`.

The worker's half is :class:`procio_nice._codec.JsonCodec`, in a module of its own so
that workers never import this one (which imports ``procio_workers.abc``, hence
anyio). ``_codec`` describes the wire format.

Only importable functions and JSON values travel; an exception comes back as its own
class if that class is a built-in exception, else as :class:`RemoteJsonError`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from procio_workers.abc import Buffer, Serializer

from ._codec import decode


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


class JsonSerializer(Serializer):
    """JSON on the wire: readable, language-neutral, and only for JSON values."""

    worker_codec: ClassVar[str] = "procio_nice._codec:JsonCodec"

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        """Encode the call as ``{"function": ..., "args": [...]}``."""
        return [json.dumps({"function": _reference(func), "args": list(args)}).encode()]

    def load_reply(self, segments: Sequence[memoryview]) -> object:
        """Decode a result, or rebuild an exception."""
        reply = decode(segments)
        if "exception" in reply:
            info = reply["exception"]
            type_name, message = str(info["type"]), str(info["message"])
            module, _, name = type_name.rpartition(".")
            candidate = getattr(builtins, name, None) if module == "builtins" else None
            if isinstance(candidate, type) and issubclass(candidate, Exception):
                return candidate(message)
            return RemoteJsonError(type_name, message)
        return reply["value"]
