"""The built-in serializers: pickle (the default) and cloudpickle."""

from __future__ import annotations

import pickle
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


_CLOUDPICKLE_HINT = (
    "install the cloudpickle extra (pip install 'procio-workers[cloudpickle]') to send it "
    "by value, or define it at the top level of an importable module"
)


def _needs_by_value(func: object) -> bool:
    """Whether *func* cannot be found by name in a worker, so it must travel by value."""
    if _defined_in_sessionless_main(func):
        return True
    # A lambda, or a function or class defined inside a function: no import finds it.
    return "<" in getattr(func, "__qualname__", "")


class PickleSerializer(Serializer):
    """Pickle protocol 5, with large buffers out of band; the default.

    Functions travel by reference when a worker can import them by name. One that it
    cannot — a lambda, a closure, a local function, or one defined in a ``python -c``
    command or an interactive session — goes by value through cloudpickle when it is
    installed (the ``cloudpickle`` extra), as loky does; without cloudpickle it is a
    :class:`~procio_workers.SerializationError` that says what to install. The worker
    needs cloudpickle too only for calls sent by value.
    """

    worker_codec: ClassVar[str] = "pickle"

    def __init__(self) -> None:
        self._codec = _wire.PickleCodec()
        self._by_value: _wire.PickleCodec | None = None

    def _by_value_codec(self, func: object) -> _wire.PickleCodec:
        if self._by_value is None:
            try:
                self._by_value = _wire.cloudpickle_codec()
            except ImportError:
                raise TypeError(
                    f"a worker cannot import {getattr(func, '__qualname__', func)!r} by "
                    f"name; {_CLOUDPICKLE_HINT}"
                ) from None
        return self._by_value

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        """Pickle ``(func, args)``; large ``bytes`` arguments go out of band."""
        if _needs_by_value(func):
            return self._by_value_codec(func).dumps((func, args), 2)
        try:
            return self._codec.dumps((func, args), 2)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            # Something inside (a partial of a lambda, a bound method of a local
            # class...) has no importable name: by value it may travel, when
            # cloudpickle is there; otherwise the original error stands.
            try:
                by_value = self._by_value_codec(func)
            except TypeError:
                raise exc from None
            return by_value.dumps((func, args), 2)

    def dump_batch(
        self, func: Callable[..., object], calls: Sequence[tuple[Any, ...]]
    ) -> Sequence[Buffer]:
        """Pickle ``(func, calls)`` for a BATCH, as :meth:`dump_call` would.

        A map's chunk holds thousands of small calls: it is pickled at once, and the
        scan of every argument for large buffers to send out of band is skipped when
        the whole pickle is smaller than the smallest such buffer (none can be in it).
        """
        batch = calls if type(calls) is list else list(calls)
        if type(self) is PickleSerializer and not _needs_by_value(func):
            try:
                data = pickle.dumps(((func, batch), []), protocol=5)
            except Exception:  # dump_call reports it, or finds another way
                pass
            else:
                if len(data) < _wire.OUT_OF_BAND_THRESHOLD:
                    return [data]
        return self.dump_call(func, batch)  # type: ignore[arg-type]

    def _dump_items(self, func: Callable[..., object], items: list[Any]) -> Sequence[Buffer] | None:
        """Pickle ``(func, items, 1)``: a BATCH of one-argument calls (feature "items").

        ``None`` when something cannot be pickled so, and from a subclass, whose own
        :meth:`dump_call` the triple would bypass: the chunk then goes as argument
        tuples, whose way reports what cannot travel.
        """
        if type(self) not in (PickleSerializer, CloudpickleSerializer):
            return None
        value = (func, items, 1)
        try:
            if type(self) is CloudpickleSerializer:
                return self._codec.dumps(value, 2)
            if _needs_by_value(func):
                return self._by_value_codec(func).dumps(value, 2)
            data = pickle.dumps((value, []), protocol=5)
            if len(data) < _wire.OUT_OF_BAND_THRESHOLD:
                return [data]  # too small to hold a buffer worth sending out of band
            return self._codec.dumps(value, 2)
        except Exception:
            return None

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
