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
from procio_process import run_process as run_process
from procio_process import open_process as open_process
from procio_process import Process as Process
from procio_process import CancelPolicy as CancelPolicy
from procio_process import DEFAULT_GRACE_PERIOD as DEFAULT_GRACE_PERIOD
from procio_process import PIPE as PIPE
from procio_process import DEVNULL as DEVNULL
from procio_process import STDOUT as STDOUT

__all__ = [
    "TextReceiveStream",
    "TextSendStream",
    "TextStream",
    "TextConnectable",
    "LineReceiveStream",
    "LineTooLongError",
    "run_process",
    "open_process",
    "Process",
    "CancelPolicy",
    "DEFAULT_GRACE_PERIOD",
    "PIPE",
    "DEVNULL",
    "STDOUT",
]
