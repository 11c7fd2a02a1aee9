"""Run Python functions in reusable worker processes from AnyIO code.

``to_process.run_sync`` is AnyIO's API on a default pool; :class:`WorkerPool` is an
explicit pool with limits, an idle timer, an initializer and figures. Workers speak a
documented protocol (the page "The worker protocol"); :mod:`procio_workers.abc` holds the
extension points, :mod:`procio_workers.codecs` the pickle codec that workers run and
:mod:`procio_workers.testing` the conformance kit.
"""

# Importing this package imports nothing but the standard library: each name below is
# loaded on first use (PEP 562). A codec module runs inside every worker, and a worker
# imports only the standard library so that it starts about as fast as a bare
# interpreter; a codec built on procio_workers.codecs imports this package on the way,
# and must not pull anyio (most names below need it) into every worker with it.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from . import abc as abc
    from . import to_process as to_process
    from ._errors import BatchError as BatchError
    from ._errors import BrokenWorkerProcess as BrokenWorkerProcess
    from ._errors import RemoteTraceback as RemoteTraceback
    from ._errors import SerializationError as SerializationError
    from ._errors import WorkerError as WorkerError
    from ._mapping import MapResults as MapResults
    from ._mapping import StreamResults as StreamResults
    from ._pool import PoolStatistics as PoolStatistics
    from ._pool import WorkerPool as WorkerPool
    from ._process_backend import OutputHandler as OutputHandler
    from ._process_backend import ProcessBackend as ProcessBackend
    from ._serializers import CloudpickleSerializer as CloudpickleSerializer
    from ._serializers import PickleSerializer as PickleSerializer
    from ._wire import PROTOCOL_VERSION as PROTOCOL_VERSION

__all__ = [
    "to_process",
    "WorkerPool",
    "PoolStatistics",
    "MapResults",
    "StreamResults",
    "BrokenWorkerProcess",
    "BatchError",
    "WorkerError",
    "RemoteTraceback",
    "SerializationError",
    "PickleSerializer",
    "CloudpickleSerializer",
    "ProcessBackend",
    "OutputHandler",
    "PROTOCOL_VERSION",
    "abc",
]

# Where each public name lives: a module of this package, and the attribute there
# (None: the name is the submodule itself).
_HOMES: dict[str, tuple[str, str | None]] = {
    "abc": (".abc", None),
    "to_process": (".to_process", None),
    "BatchError": ("._errors", "BatchError"),
    "BrokenWorkerProcess": ("._errors", "BrokenWorkerProcess"),
    "RemoteTraceback": ("._errors", "RemoteTraceback"),
    "SerializationError": ("._errors", "SerializationError"),
    "WorkerError": ("._errors", "WorkerError"),
    "MapResults": ("._mapping", "MapResults"),
    "StreamResults": ("._mapping", "StreamResults"),
    "PoolStatistics": ("._pool", "PoolStatistics"),
    "WorkerPool": ("._pool", "WorkerPool"),
    "OutputHandler": ("._process_backend", "OutputHandler"),
    "ProcessBackend": ("._process_backend", "ProcessBackend"),
    "CloudpickleSerializer": ("._serializers", "CloudpickleSerializer"),
    "PickleSerializer": ("._serializers", "PickleSerializer"),
    "PROTOCOL_VERSION": ("._wire", "PROTOCOL_VERSION"),
}


# Hidden from type checkers: they see the imports above, and flag a misspelt name
# instead of taking it for one that __getattr__ would provide.
if not TYPE_CHECKING:

    def __getattr__(name: str) -> Any:
        home = _HOMES.get(name)
        if home is None:
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
        module_name, attribute = home
        module = importlib.import_module(module_name, __name__)
        value = module if attribute is None else getattr(module, attribute)
        # Found once: later look-ups are ordinary attribute reads.
        globals()[name] = value
        return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
