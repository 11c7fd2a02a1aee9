"""procio: async subprocess and worker-process toolkit for AnyIO (asyncio and Trio).

The facade holds no logic: it re-exports the public API of ``procio_text``,
``procio_process`` and ``procio_workers``. ``python -m procio`` runs a short demo.
"""

from __future__ import annotations

from procio_text import TextReceiveStream as TextReceiveStream
from procio_text import TextSendStream as TextSendStream
from procio_text import TextStream as TextStream
from procio_text import TextConnectable as TextConnectable
from procio_text import LineReceiveStream as LineReceiveStream
from procio_text import LineTooLongError as LineTooLongError
from procio_text import LineDecodeError as LineDecodeError
from procio_process import run_process as run_process
from procio_process import open_process as open_process
from procio_process import Process as Process
from procio_process import CancelPolicy as CancelPolicy
from procio_process import DEFAULT_GRACE_PERIOD as DEFAULT_GRACE_PERIOD
from procio_process import PIPE as PIPE
from procio_process import DEVNULL as DEVNULL
from procio_process import STDOUT as STDOUT
from procio_workers import to_process as to_process
from procio_workers import WorkerPool as WorkerPool
from procio_workers import PoolStatistics as PoolStatistics
from procio_workers import MapResults as MapResults
from procio_workers import StreamResults as StreamResults
from procio_workers import BatchError as BatchError
from procio_workers import BrokenWorkerProcess as BrokenWorkerProcess
from procio_workers import WorkerError as WorkerError
from procio_workers import RemoteTraceback as RemoteTraceback
from procio_workers import SerializationError as SerializationError
from procio_workers import PickleSerializer as PickleSerializer
from procio_workers import CloudpickleSerializer as CloudpickleSerializer
from procio_workers import ProcessBackend as ProcessBackend
from procio_workers import OutputHandler as OutputHandler
from procio_workers import PROTOCOL_VERSION as PROTOCOL_VERSION
from procio_workers import abc as abc

__all__ = [
    "TextReceiveStream",
    "TextSendStream",
    "TextStream",
    "TextConnectable",
    "LineReceiveStream",
    "LineTooLongError",
    "LineDecodeError",
    "run_process",
    "open_process",
    "Process",
    "CancelPolicy",
    "DEFAULT_GRACE_PERIOD",
    "PIPE",
    "DEVNULL",
    "STDOUT",
    "to_process",
    "WorkerPool",
    "PoolStatistics",
    "MapResults",
    "StreamResults",
    "BatchError",
    "BrokenWorkerProcess",
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
