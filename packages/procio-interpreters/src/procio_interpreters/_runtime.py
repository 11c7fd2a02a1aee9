"""The interpreter primitives of this Python, chosen once at import.

Python 3.13 has them only in the private ``_interpreters`` and ``_interpqueues``
modules; 3.14 made them public as :mod:`concurrent.interpreters`. Both offer the same
few operations, which this module names once: create an interpreter, bind values in
its ``__main__``, run a script in it (blocking the calling thread), destroy it, and
carry values through a cross-interpreter queue.

Only values that pass :func:`procio_interpreters._guest.shareable` are ever put in a
queue: everything else is pickled first, so the queue's own fallbacks never apply.
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = [
    "SUPPORTED",
    "UNSUPPORTED_REASON",
    "create",
    "bind",
    "run",
    "destroy",
    "interpreter_ids",
    "queue_create",
    "queue_destroy",
    "put",
    "get",
]

UNSUPPORTED_REASON = (
    "procio-interpreters needs Python 3.13 or newer (subinterpreters with their own GIL "
    f"and cross-interpreter queues); this is Python {sys.version_info[0]}.{sys.version_info[1]}. "
    "Use procio_workers.WorkerPool's default process backend instead"
)

if sys.version_info >= (3, 14):
    from concurrent import interpreters as _public

    SUPPORTED = True

    def create() -> Any:
        return _public.create()

    def bind(interp: Any, names: dict[str, object]) -> None:
        interp.prepare_main(names)

    def run(interp: Any, script: str) -> str | None:
        try:
            interp.exec(script)
        except _public.ExecutionFailed as exc:
            return str(getattr(exc.excinfo, "errdisplay", None) or exc)
        return None

    def destroy(interp: Any) -> None:
        interp.close()

    def interpreter_ids() -> list[int]:
        return [int(each.id) for each in _public.list_all()]

    def queue_create() -> Any:
        return _public.create_queue()

    def queue_destroy(queue: Any) -> None:
        # A public queue is released with its last reference.
        pass

    def put(queue: Any, value: object) -> None:
        queue.put_nowait(value)

    def get(queue: Any) -> object:
        return queue.get_nowait()

elif sys.version_info >= (3, 13):
    from typing import Final, Literal

    import _interpqueues
    import _interpreters

    SUPPORTED = True

    # The queue's per-item format tag (unused: the payload says how it travels), and
    # what becomes of items whose interpreter is destroyed: removed (1).
    _FORMAT: Final = 0
    _UNBOUND_REMOVE: Final[Literal[1]] = 1

    def create() -> Any:
        return _interpreters.create()

    def bind(interp: Any, names: dict[str, object]) -> None:
        _interpreters.set___main___attrs(interp, names)

    def run(interp: Any, script: str) -> str | None:
        info = _interpreters.exec(interp, script)
        if info is None:
            return None
        return str(info.errdisplay or info.formatted)

    def destroy(interp: Any) -> None:
        _interpreters.destroy(interp)

    def interpreter_ids() -> list[int]:
        # Each entry is (id, whence).
        return [int(each[0]) for each in _interpreters.list_all()]

    def queue_create() -> Any:
        return _interpqueues.create(0, _FORMAT, _UNBOUND_REMOVE)

    def queue_destroy(queue: Any) -> None:
        _interpqueues.destroy(queue)

    def put(queue: Any, value: object) -> None:
        _interpqueues.put(queue, value, _FORMAT, _UNBOUND_REMOVE)

    def get(queue: Any) -> object:
        return _interpqueues.get(queue)[0]

else:
    SUPPORTED = False

    def _unsupported(*args: object) -> Any:
        raise RuntimeError(UNSUPPORTED_REASON)

    create = bind = run = destroy = interpreter_ids = _unsupported
    queue_create = queue_destroy = put = get = _unsupported
