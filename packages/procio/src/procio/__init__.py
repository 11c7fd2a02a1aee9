"""procio: async subprocess and worker-process toolkit for AnyIO (asyncio and Trio).

The facade holds no logic: it re-exports the public API of ``procio_text``,
``procio_process`` and ``procio_workers``.
"""

from __future__ import annotations

from procio_text import LineReceiveStream as LineReceiveStream
from procio_text import LineTooLongError as LineTooLongError
from procio_text import TextConnectable as TextConnectable
from procio_text import TextReceiveStream as TextReceiveStream
from procio_text import TextSendStream as TextSendStream
from procio_text import TextStream as TextStream

__all__ = [
    "LineReceiveStream",
    "LineTooLongError",
    "TextConnectable",
    "TextReceiveStream",
    "TextSendStream",
    "TextStream",
]
