"""A count of the reads of a worker's response pipe that found it empty.

The ``empty_reads`` fixture (in ``conftest``) patches the read, so that it counts into
one of these.
"""

from __future__ import annotations


class EmptyReads:
    """How many reads of a response pipe found nothing to read, since the last reset."""

    def __init__(self) -> None:
        self.count = 0
