"""InterpreterBackend: a procio worker backend whose workers are subinterpreters.

Built only on the public extension API of procio_workers (:mod:`procio_workers.abc`).
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, Literal

from anyio import CancelScope
from procio_workers import SerializationError
from procio_workers.abc import Worker, WorkerBackend

from . import _guest, _runtime
from ._worker import _GUEST_MODULE, IDLE_POLL_SECONDS, InterpreterWorker, _Host

if sys.version_info >= (3, 12):
    from typing import override
else:  # pragma: no cover - before Python 3.12
    from typing_extensions import override

__all__ = ["InterpreterBackend", "interpreters_supported"]

# Plain functions, builtins and classes go by name, without pickle on either side.
_BY_NAME = (types.FunctionType, types.BuiltinFunctionType, type)


def interpreters_supported() -> bool:
    """Whether this Python can run :class:`InterpreterBackend` (3.13 or newer)."""
    return _runtime.SUPPORTED


def _main_spec() -> tuple[str, str] | None:
    """How a guest finds the parent's ``__main__``: a module name, a file, or not at all."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    name = getattr(spec, "name", None)
    if name and name != "__main__":
        return ("module", str(name))
    path = getattr(main, "__file__", None)
    if path and os.path.isfile(path):
        return ("path", os.path.abspath(path))
    return None


def _reference(func: Callable[..., object]) -> object:
    """Name *func* for the guest: ``(module, qualname)`` when that finds it, else a pickle."""
    if isinstance(func, _BY_NAME):
        module = getattr(func, "__module__", None)
        qualname = getattr(func, "__qualname__", None)
        if isinstance(module, str) and isinstance(qualname, str) and "<" not in qualname:
            found: object = sys.modules.get(module)
            for part in qualname.split("."):
                found = getattr(found, part, None)
            if found is func:
                return (module, qualname)
    try:
        return pickle.dumps(func, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        raise SerializationError(
            f"{func!r} cannot be sent to a subinterpreter: {exc}; it must be importable "
            "(a module-level function, class or method)"
        ) from exc


class InterpreterBackend(WorkerBackend):
    """Runs a :class:`~procio_workers.WorkerPool`'s calls in subinterpreters of this process.

    ::

        async with WorkerPool(backend=InterpreterBackend(), max_workers=4) as pool:
            digest = await pool.run_sync(checksum, data)

    Each worker is a subinterpreter with its own GIL (so calls run in parallel on
    several cores) hosted by a dedicated thread. The pool's policy applies unchanged:
    reuse, idle timeout, limiter, max tasks per worker, initializer and figures.

    Functions travel by name and must be importable in the interpreter (a
    module-level function, or one in the main script, which a guest runs as
    ``__mp_main__`` the first time it needs it). Arguments that are ``None``,
    ``bool``, ``int`` (64-bit), ``float``, ``str``, ``bytes`` or tuples of them cross
    without pickling; a C-contiguous ``memoryview`` is shared without a copy (the
    function sees, and may change, the caller's memory, so keep it unchanged until the
    call returns). Anything else is pickled (protocol 5: out-of-band buffers, such as a
    NumPy array's, cross without a copy and are copied once inside the interpreter, so the
    function gets its own). Results come back the same way, except that none is shared:
    a ``memoryview`` in a result comes back as a memoryview over a copy of its bytes
    (format ``"B"``).

    ``cancellable=True`` cannot interrupt the function: an interpreter cannot be
    stopped mid-call. The caller gets its cancellation at once, the call's result is
    dropped, the interpreter is destroyed as soon as the call returns, and the pool
    starts a new one for its next call. A ``memoryview`` argument stays shared with the
    abandoned call until then.

    Args:
        idle_poll: how an interpreter waits for its next call after answering one, as
            with :class:`~procio_workers.ProcessBackend`. ``"adaptive"`` (the default)
            polls for 200 µs, but only while calls come back to back, so that a quick
            sequence of calls finds the interpreter's thread awake and the caller polls
            briefly for the reply instead of waiting through the event loop; calls that
            come now and then cost no polling. A number of seconds (at most 1) polls that
            long after every answer; ``0`` never polls.

    Raises:
        RuntimeError: on Python before 3.13, which has no interpreters with their own
            GIL.
        TypeError: an *idle_poll* that is neither ``"adaptive"`` nor a number.
        ValueError: an *idle_poll* outside 0 to 1 second.
    """

    def __init__(self, *, idle_poll: float | Literal["adaptive"] = "adaptive") -> None:
        if not _runtime.SUPPORTED:
            raise RuntimeError(_runtime.UNSUPPORTED_REASON)
        self.idle_poll: float | Literal["adaptive"] = idle_poll
        self._idle_poll = _idle_poll_setting(idle_poll)

    @override
    def prepare_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        """Encode the call for a guest; bad input fails here, before a worker is reserved.

        Raises:
            SerializationError: if the function or an argument cannot travel.
        """
        if not callable(func):
            raise TypeError(f"{func!r} is not callable")
        reference = _reference(func)
        if _guest.shareable(args, buffers=True):
            return (_guest.ARGS_SHARED, reference, args, ())
        buffers: list[pickle.PickleBuffer] = []
        try:
            data = _guest.dumps(args, buffer_callback=buffers.append)
        except Exception as exc:
            raise SerializationError(f"the arguments could not be pickled: {exc}") from exc
        views = []
        for each in buffers:
            view = each.raw()
            if not view.c_contiguous:  # pragma: no cover - raw() is always contiguous
                view = memoryview(view.tobytes())
            views.append(view)
        return (_guest.ARGS_PICKLED, reference, data, tuple(views))

    @override
    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        """Create a subinterpreter and return it once it can take calls.

        Raises:
            TypeError: if *options* (process start options) are given: a subinterpreter
                is not a process.
        """
        if options:
            raise TypeError(
                "a subinterpreter is not a process: process options "
                f"({', '.join(sorted(options))}) do not apply to InterpreterBackend"
            )
        guest = sys.modules.get(_GUEST_MODULE)
        if guest is not None and getattr(guest, "RUNNING_PARENT_MAIN", False):
            raise RuntimeError(
                "a subinterpreter running the parent's main module may not start "
                "interpreter workers: the main module starts them when imported. Put that "
                'code under `if __name__ == "__main__":`, which a worker does not run.'
            )
        host = _Host(tuple(str(each) for each in sys.path), _main_spec(), self._idle_poll)
        worker = InterpreterWorker(host)
        try:
            await worker._started()
        except BaseException:
            with CancelScope(shield=True):
                await worker.aclose()
            raise
        return worker


def _idle_poll_setting(idle_poll: object) -> tuple[float, bool]:
    """(seconds an interpreter polls after an answer, adaptive) for *idle_poll*."""
    if isinstance(idle_poll, str) and idle_poll == "adaptive":
        return IDLE_POLL_SECONDS, True
    if isinstance(idle_poll, bool) or not isinstance(idle_poll, (int, float)):
        raise TypeError(f'idle_poll must be "adaptive" or a number of seconds, not {idle_poll!r}')
    if not 0 <= idle_poll <= 1:  # NaN fails this too
        raise ValueError(f"idle_poll must be between 0 and 1 second, not {idle_poll!r}")
    return float(idle_poll), False
