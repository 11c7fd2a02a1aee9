"""Functions the worker-reads tests run in workers (importable by name there)."""

from __future__ import annotations

import os
import sys
from typing import Any


def _worker() -> Any:
    return sys.modules["_procio_worker"]


def count_failed_reads() -> None:
    """From now on, count the reads of the request pipe that found nothing to read."""
    worker = _worker()
    real = worker.os.readv
    counter = getattr(real, "procio_counter", None)
    if counter is not None:
        counter[0] = 0
        return
    counter = [0]

    def counting(fd: int, buffers: Any) -> int:
        try:
            return int(real(fd, buffers))
        except BlockingIOError:
            if fd == worker.REQUEST_FD:
                counter[0] += 1
            raise

    counting.procio_counter = counter  # type: ignore[attr-defined]
    # The worker program reaches os.readv through its module: it is os itself.
    os.readv = counting


def failed_reads() -> int:
    """Return the reads of the request pipe that found nothing since count_failed_reads()."""
    return int(os.readv.procio_counter[0])  # type: ignore[attr-defined]


def flip_first(values: list[Any]) -> list[Any]:
    """Flip the first byte of each bytearray and memoryview; return their type names, then them.

    Writing into a buffer that arrived read-only raises: they must arrive writable.
    """
    kinds = []
    for value in values:
        kinds.append(type(value).__name__)
        if isinstance(value, (bytearray, memoryview)):
            view = memoryview(value).cast("B")
            view[0] ^= 0xFF
    return [kinds, *values]


def reads_bytes_in_place() -> bool:
    """Whether this worker has read a large segment into a fresh bytes object."""
    return sys.modules["_procio_wire"]._storage is not None
