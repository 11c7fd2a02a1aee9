"""The built-in serializers: pickle (the default) and cloudpickle."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from . import _wire
from .abc import Buffer, Serializer


def _defined_in_sessionless_main(func: object) -> bool:
    """Whether *func* lives in a ``__main__`` that a worker cannot load (``-c``, REPL)."""
    if getattr(func, "__module__", None) != "__main__":
        return False
    main = sys.modules.get("__main__")
    return getattr(main, "__file__", None) is None and getattr(main, "__spec__", None) is None


class PickleSerializer(Serializer):
    """Pickle protocol 5, with large buffers out of band; the default.

    Functions travel by reference, so they must be importable in the worker, except for
    functions defined in a ``python -c`` command or an interactive session, which go by
    value through cloudpickle when it is installed (the ``cloudpickle`` extra).
    """

    worker_codec: ClassVar[str] = "pickle"

    def __init__(self) -> None:
        self._codec = _wire.PickleCodec()
        self._by_value: _wire.PickleCodec | None = None

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        """Pickle ``(func, args)``; large ``bytes`` arguments go out of band."""
        codec = self._codec
        if _defined_in_sessionless_main(func):
            if self._by_value is None:
                try:
                    self._by_value = _wire.cloudpickle_codec()
                except ImportError:
                    raise TypeError(
                        f"{func!r} is defined in an interactive session or a `python -c` "
                        "command, so a worker cannot import it; install "
                        "procio-workers[cloudpickle] to send it by value"
                    ) from None
            codec = self._by_value
        return codec.dumps((func, args), 2)

    def load_reply(self, segments: Sequence[memoryview]) -> object:
        """Unpickle a result or an exception."""
        return self._codec.loads(segments)


class CloudpickleSerializer(PickleSerializer):
    """cloudpickle on both sides: lambdas, closures and interactively defined classes.

    Needs the ``cloudpickle`` extra (``pip install procio-workers[cloudpickle]``) in the
    parent and in the worker's environment.
    """

    worker_codec: ClassVar[str] = "cloudpickle"

    def __init__(self) -> None:
        super().__init__()
        self._codec = _wire.cloudpickle_codec()

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        """Pickle ``(func, args)`` with cloudpickle."""
        return self._codec.dumps((func, args), 2)
