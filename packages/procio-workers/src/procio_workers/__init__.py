"""Run Python functions in reusable worker processes from AnyIO code.

``to_process.run_sync`` is AnyIO's API on a default pool; :class:`WorkerPool` is an
explicit pool with limits, an idle timer, an initializer and figures. Workers speak a
documented protocol (the page "The worker protocol"); :mod:`procio_workers.abc` holds the
extension points and :mod:`procio_workers.testing` the conformance kit.
"""

from __future__ import annotations

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
