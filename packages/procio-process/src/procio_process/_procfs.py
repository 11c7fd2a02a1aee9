"""Reading every process's state from Linux's ``/proc``: the one parser of ``stat``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple


class ProcStat(NamedTuple):
    """What procio reads of one ``/proc/<pid>/stat``."""

    pid: int
    #: The one-letter state: ``R``, ``S``, ``D``... ``Z`` for a zombie, ``X`` dead.
    state: str
    ppid: int
    pgrp: int
    #: The command name (``comm``), for messages.
    command: str


def proc_stats() -> Iterator[ProcStat]:
    """Yield the state of every process that can be read now (Linux only).

    A process that exits while the listing is read is left out.
    """
    try:
        entries = os.listdir("/proc")
    except OSError:
        return
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue  # exited while we looked
        # "pid (comm) state ppid pgrp ...": the command name may hold spaces and
        # parentheses, so it ends at the last ")".
        end = stat.rfind(b")")
        fields = stat[end + 2 :].split(b" ", 3)
        if len(fields) < 3:
            continue
        command = stat[stat.find(b"(") + 1 : end].decode(errors="replace")
        yield ProcStat(int(entry), fields[0].decode(), int(fields[1]), int(fields[2]), command)
