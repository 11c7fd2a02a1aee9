"""Functions the map and stream tests run in workers (importable by name there).

Items of ``WorkerPool.map`` reach a function as its one argument, so the functions that
need more than a value take a tuple. Files in a folder the test owns are how a worker
tells the test what it started, finished or produced.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn


class MapFailure(ValueError):
    """Raised by :func:`fail_on` for the one item it refuses."""


def triple_plus_one(x: int) -> int:
    return 3 * x + 1


def pid_of(_: object) -> int:
    return os.getpid()


def pid() -> int:
    return os.getpid()


def sleep_then_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def spin_then_pid(seconds: float) -> int:
    """Keep the CPU busy for *seconds* of this thread's CPU time, then return the pid."""
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
    return os.getpid()


def sleep_then_echo(item: tuple[float, object]) -> object:
    seconds, value = item
    time.sleep(seconds)
    return value


def fail_on(item: tuple[int, int]) -> int:
    """Return ``10 * value``, except for the value *bad*: raise ValueError there."""
    value, bad = item
    if value == bad:
        raise ValueError(f"refusing {value}")
    return 10 * value


def slow_recorded(item: tuple[str, int, float]) -> int:
    """Create ``started.<index>`` in the folder, sleep, create ``finished.<index>``."""
    folder, index, seconds = item
    Path(folder, f"started.{index}").touch()
    time.sleep(seconds)
    Path(folder, f"finished.{index}").touch()
    return index


def recorded_failure(item: tuple[str, int]) -> int:
    """Create ``started.<index>`` in the folder, then raise ValueError."""
    folder, index = item
    Path(folder, f"started.{index}").touch()
    raise ValueError(f"item {index} fails")


def announce_pid_then_sleep(item: tuple[str, float]) -> int:
    """Write this pid into the file *path* (atomically), then sleep."""
    path, seconds = item
    Path(path + ".tmp").write_text(str(os.getpid()))
    os.replace(path + ".tmp", path)
    time.sleep(seconds)
    return os.getpid()


def wait_or_announce(item: tuple[str, str]) -> int:
    """("wait", path): wait (at most 20 s) until *path* exists; ("announce", path): write
    this pid into *path*, then sleep 30 s.
    """
    role, path = item
    if role == "announce":
        announce_pid_then_sleep((path, 30.0))
    else:
        deadline = time.monotonic() + 20
        while not os.path.exists(path) and time.monotonic() < deadline:
            time.sleep(0.005)
    return os.getpid()


def lock_result_on(item: tuple[int, int]) -> object:
    """Return a value pickle refuses (a lock) for the value *bad*, else the value."""
    value, bad = item
    if value == bad:
        return threading.Lock()
    return value


def kill_self_on(item: tuple[int, int]) -> int:
    """SIGKILL this worker for the value *bad*."""
    value, bad = item
    if value == bad:
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(10)
    return value


def interrupt_parent_on(item: tuple[int, int]) -> int:
    """Send SIGINT to the parent for the value *bad*, then answer late."""
    value, bad = item
    if value == bad:
        os.kill(os.getppid(), signal.SIGINT)
        time.sleep(0.2)
    return 10 * value


def _interrupt_parent_once_closing(where: str) -> None:
    """Say the call started, wait for the parent's ``closing`` in *where*, SIGINT it.

    The signal comes a moment after ``closing`` appears, while the parent waits for this
    very call; the call then goes on a little longer.
    """
    folder = Path(where)
    (folder / "started.part").write_text("")
    (folder / "started.part").replace(folder / "started")
    deadline = time.monotonic() + 30
    while not (folder / "closing").exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.2)
    os.kill(os.getppid(), signal.SIGINT)
    time.sleep(0.2)


def interrupt_parent_once_closing(item: tuple[int, str]) -> int:
    """The value 0 answers at once; any other, after :func:`_interrupt_parent_once_closing`."""
    value, where = item
    if value:
        _interrupt_parent_once_closing(where)
    return value


def interrupt_parent_once_closing_between_items(where: str) -> Iterator[int]:
    """Yield 0, then :func:`_interrupt_parent_once_closing` before the next item."""
    yield 0
    _interrupt_parent_once_closing(where)
    yield 1
    yield 2


def square_and_pid(item: int) -> tuple[int, int]:
    time.sleep(0.001)
    return item * item, os.getpid()


# -- generator functions for stream --------------------------------------------------


def count_up(n: int) -> Iterator[int]:
    yield from range(n)


def big_items(count: int, size: int) -> Iterator[bytes]:
    for i in range(count):
        yield bytes([i % 256]) * size


def sized_items(sizes: list[int]) -> Iterator[bytes]:
    """Yield one bytes object of each size, the n-th made of the byte n."""
    for n, size in enumerate(sizes):
        yield bytes([n % 256]) * size


def sleep_wait_or_release(item: float | tuple[str, str]) -> object:
    """A number: sleep that long, return the pid. ("wait", path): return whether *path*
    came to exist within 10 s. ("release", path): create *path*, return the pid.
    """
    if not isinstance(item, tuple):
        return sleep_then_pid(item)
    role, path = item
    if role == "wait":
        return _wait_for(path, 10.0)
    Path(path).touch()
    return os.getpid()


def _wait_for(path: str, give_up: float) -> bool:
    """Wait until *path* exists; ``False`` if it did not within *give_up* seconds."""
    deadline = time.monotonic() + give_up
    while not os.path.exists(path):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.005)
    return True


def first_then_wait(path: str, give_up: float) -> Iterator[str]:
    """Yield "first", then wait until *path* exists (at most *give_up* seconds)."""
    yield "first"
    yield "second" if _wait_for(path, give_up) else "gave up waiting"


def endless_counted(path: str) -> Iterator[int]:
    """Yield 0, 1, 2, ... forever; before each yield, write how many were produced."""
    produced = 0
    while True:
        produced += 1
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(str(produced))
        os.replace(path + ".tmp", path)
        yield produced - 1


def endless_with_finally(path: str) -> Iterator[tuple[int, int]]:
    """Yield (pid, i) forever; the finally block writes "closed:<pid>" into *path*."""
    try:
        i = 0
        while True:
            yield os.getpid(), i
            i += 1
    finally:
        Path(path).write_text(f"closed:{os.getpid()}")


def pid_then_sleep(seconds: float) -> Iterator[int]:
    """Yield this pid, then sleep (a long item the test cancels)."""
    yield os.getpid()
    time.sleep(seconds)
    yield -1


def raise_after(count: int) -> Iterator[int]:
    yield from range(count)
    raise ValueError(f"raised after {count} items")


def returns_five() -> int:
    return 5


def lock_at(position: int) -> Iterator[object]:
    """Yield 0, 1, ... and a value pickle refuses at *position*, then more ints."""
    yield from range(position)
    yield threading.Lock()
    yield from range(position + 1, position + 5)


def killed_after(count: int) -> Iterator[int]:
    """Yield *count* items, give the parent time to read them, then SIGKILL this worker."""
    yield from range(count)
    time.sleep(0.2)
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)


def interrupt_parent_after(count: int) -> Iterator[int]:
    """Yield *count* items, then SIGINT the parent and go on yielding slowly."""
    yield from range(count)
    os.kill(os.getppid(), signal.SIGINT)
    for i in range(count, count + 100):
        time.sleep(0.01)
        yield i


def slow_count(n: int, seconds: float) -> Iterator[int]:
    for i in range(n):
        time.sleep(seconds)
        yield i


def never_returns() -> NoReturn:
    time.sleep(60)
    raise AssertionError("not cancelled")


def burst_then_late_then_wait(count: int, path: str, give_up: float) -> Iterator[object]:
    """Yield 0 .. count - 1 at once, then "late" after 50 ms, then wait for *path*."""
    yield from range(count)
    time.sleep(0.05)
    yield "late"
    yield "after" if _wait_for(path, give_up) else "gave up waiting"
