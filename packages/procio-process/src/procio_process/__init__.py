"""Async subprocesses for AnyIO: ``run_process``, ``open_process`` and ``Process``.

The signatures are AnyIO's, so code moves by changing an import. On top of them:
a documented :class:`CancelPolicy` (terminate, grace period, kill), signalling a whole
process tree, ``timeout``, ``task_status`` for ``TaskGroup.start``, and on Linux one
code path for asyncio, uvloop and Trio built on pidfds and non-blocking pipes.
"""

from __future__ import annotations

from subprocess import DEVNULL as DEVNULL
from subprocess import PIPE as PIPE
from subprocess import STDOUT as STDOUT

from ._open import open_process as open_process
from ._policy import DEFAULT_GRACE_PERIOD as DEFAULT_GRACE_PERIOD
from ._policy import CancelPolicy as CancelPolicy
from ._process import Process as Process
from ._run import run_process as run_process

__all__ = [
    "run_process",
    "open_process",
    "Process",
    "CancelPolicy",
    "DEFAULT_GRACE_PERIOD",
    "PIPE",
    "DEVNULL",
    "STDOUT",
]
