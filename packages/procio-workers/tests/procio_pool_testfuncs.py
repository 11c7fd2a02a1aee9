"""Functions the pool's safety tests run in workers (importable by name there)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path


def interrupt_parent_then_return(value: object, seconds: float) -> object:
    """Send SIGINT to the parent while it waits for this call, then answer late."""
    os.kill(os.getppid(), signal.SIGINT)
    time.sleep(seconds)
    return value


def announce_then_sleep(path: str, seconds: float) -> int:
    """Create *path*, holding this worker's pid, once the call runs; then sleep.

    The file appears whole (written aside, then renamed): a reader that sees it sees
    the pid, not an empty file just created.
    """
    aside = Path(f"{path}.{os.getpid()}.part")
    aside.write_text(str(os.getpid()))
    aside.replace(path)
    time.sleep(seconds)
    return os.getpid()


def sleep_then_return(value: object, seconds: float) -> object:
    time.sleep(seconds)
    return value


def record_call(path: str) -> None:
    """Leave a trace that the call ran."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{os.getpid()}\n")


def failing_initializer() -> None:
    raise RuntimeError("initializer says no")


#: A program that sleeps ``argv[1]`` seconds, then becomes the command after it.
SLOW_START = (
    "import os, sys, time; time.sleep(float(sys.argv[1])); os.execv(sys.argv[2], sys.argv[2:])"
)
