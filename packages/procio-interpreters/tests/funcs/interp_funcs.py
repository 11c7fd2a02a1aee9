"""Functions the tests run in subinterpreters: importable there by name."""

from __future__ import annotations

import enum
import os
import select
import sys
import threading

#: Set by :func:`remember`, as an initializer would set up per-interpreter state.
REMEMBERED: object = None


class Colour(enum.IntEnum):
    RED = 1


class Text(str):
    __slots__ = ()


class Unpicklable(Exception):
    """An exception that cannot be pickled (it holds a lock)."""

    def __init__(self) -> None:
        super().__init__("holds a lock")
        self.lock = threading.Lock()


def identity(value: object) -> object:
    return value


def type_name(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}"


def interpreter_id() -> int:
    if sys.version_info >= (3, 13):
        import _interpreters

        return int(_interpreters.get_current()[0])
    raise RuntimeError("no subinterpreters before Python 3.13")


def process_id() -> int:
    return os.getpid()


def remember(value: object) -> None:
    global REMEMBERED
    REMEMBERED = value


def remembered() -> object:
    return REMEMBERED


def fail_initializer() -> None:
    raise ValueError("the initializer refuses")


def fail_deep(value: int) -> int:
    return _inner_failure(value)


def _inner_failure(value: int) -> int:
    raise ValueError(f"no good: {value}")


def exit_interpreter(code: int) -> None:
    raise SystemExit(code)


def interrupt() -> None:
    raise KeyboardInterrupt


def raise_unpicklable() -> None:
    raise Unpicklable


def return_lock() -> object:
    return threading.Lock()


def fill(view: memoryview, byte: int) -> int:
    view[:] = bytes([byte]) * len(view)
    return len(view)


def mutate_bytearray(data: bytearray) -> int:
    data[0] = 0
    return len(data)


def wait_for_byte(fd: int, write_fd: int | None = None) -> bytes:
    """Block until *fd* has a byte (after writing one to *write_fd*, if given)."""
    if write_fd is not None:
        os.write(write_fd, b"!")
    return os.read(fd, 1)


def rendezvous(mine: int, theirs: int, seconds: float) -> bool:
    """Write to *mine*, then wait up to *seconds* for the other call to write to *theirs*.

    Both calls return ``True`` only if they ran at the same time.
    """
    os.write(mine, b"x")
    ready, _, _ = select.select([theirs], [], [], seconds)
    return bool(ready)


def try_fork() -> int:
    return os.fork()


def try_signal() -> object:
    import signal

    return signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def import_module(name: str) -> str:
    import importlib

    return importlib.import_module(name).__name__


def spin(iterations: int) -> int:
    total = 0
    for i in range(iterations):
        total += i * i
    return total


def close_own_wakeup_descriptor() -> str:
    """Close the descriptor this interpreter's guest loop waits on, as a careless
    function closing every descriptor it does not know would."""
    import gc

    guest = sys.modules["_procio_interpreters_guest"]
    (loop,) = [each for each in gc.get_objects() if isinstance(each, guest._Guest)]
    os.close(loop.fd)
    return "closed"


class Counter:
    """A callable with state, which travels by pickle."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        self.count += 1
        return self.count


class Blob:
    """Travels with its bytes out of band and, rebuilt, keeps a view on them (as a
    NumPy array does)."""

    def __init__(self, data: bytearray | memoryview) -> None:
        self.data = memoryview(data)

    def __reduce_ex__(self, protocol: object) -> tuple[object, tuple[object, ...]]:
        import pickle

        return (Blob, (pickle.PickleBuffer(self.data),))


def scribble(blob: Blob) -> int:
    blob.data[0] = 0
    return len(blob.data)


def loaded_modules() -> tuple[str, ...]:
    return tuple(sorted(sys.modules))


class _CountingOs:
    """The guest loop's ``os``, counting the reads that found no call waiting (polls)."""

    def __init__(self, real: object) -> None:
        self.real = real
        self.polls = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self.real, name)

    def read(self, fd: int, size: int) -> bytes:
        try:
            data: bytes = self.real.read(fd, size)  # type: ignore[attr-defined]
        except BlockingIOError:
            self.polls += 1
            raise
        return data


def count_polls() -> None:
    """From now on, count how often this interpreter's guest loop polls for a call."""
    guest = sys.modules["_procio_interpreters_guest"]
    current = getattr(guest, "os")  # noqa: B009 - a module attribute mypy does not see
    if isinstance(current, _CountingOs):
        current.polls = 0
    else:
        setattr(guest, "os", _CountingOs(current))  # noqa: B010


def polls() -> int:
    """How often the guest loop polled for a call since :func:`count_polls`."""
    counting = getattr(sys.modules["_procio_interpreters_guest"], "os")  # noqa: B009
    assert isinstance(counting, _CountingOs)
    return counting.polls
