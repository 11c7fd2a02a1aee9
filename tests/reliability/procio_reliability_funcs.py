"""Functions the reliability suite runs in workers; importable there by module name.

``conftest.py`` puts this folder on ``sys.path``, and workers get the parent's
``sys.path``. Some of these functions break the worker on purpose, at a chosen point of
the protocol.
"""

from __future__ import annotations

import os
import signal
import struct
import sys
import tempfile
import threading
import time
from typing import Any, NoReturn


def echo(value: object) -> object:
    return value


def pid() -> int:
    return os.getpid()


def sleep(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def announce_then_sleep(prefix: str, seconds: float) -> int:
    """Create the file ``<prefix>.<pid>``, then sleep *seconds*; return this pid."""
    with open(f"{prefix}.{os.getpid()}", "w", encoding="utf-8"):
        pass
    time.sleep(seconds)
    return os.getpid()


def boom(message: str) -> NoReturn:
    raise ValueError(message)


def exit_abruptly(status: int) -> NoReturn:
    os.write(2, f"last words before exit {status}\n".encode())
    os._exit(status)


def kill_self() -> NoReturn:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(10)
    raise AssertionError("still alive after SIGKILL")


def _response_fd() -> int:
    worker = sys.modules["_procio_worker"]
    fd: int = worker.RESPONSE_FD
    return fd


def die_mid_response(announced: int, sent: int) -> NoReturn:
    """Write the start of a RESULT frame (of *announced* bytes, *sent* of them), then die."""
    wire = sys.modules["_procio_wire"]
    head = wire.HEADER.pack(wire.RESULT, 0, 1) + struct.pack(">Q", announced)
    os.write(_response_fd(), head + b"\0" * sent)
    kill_self()


def send_garbage_reply(data: bytes) -> NoReturn:
    """Write raw bytes where the reply should be, then exit."""
    os.write(_response_fd(), data)
    os._exit(0)


def big_result_killed_after(size: int, delay: float) -> bytes:
    """Return *size* bytes, while a timer SIGKILLs this worker after *delay* seconds."""
    timer = threading.Timer(delay, os.kill, (os.getpid(), signal.SIGKILL))
    timer.daemon = True
    timer.start()
    return os.urandom(1) * size


def print_lots(lines: int) -> int:
    """Write to fd 1 and 2 through print() and os.write, then return *lines*."""
    for n in range(lines):
        print(f"line {n} from the worker")
        os.write(2, b"raw stderr line\n")
    return lines


def unpicklable_result() -> object:
    return threading.Lock()


def raise_unimportable() -> NoReturn:
    """Raise an exception whose class lives in a module only this worker can import."""
    directory = tempfile.mkdtemp(prefix="procio-worker-only-")
    with open(os.path.join(directory, "procio_worker_only.py"), "w", encoding="utf-8") as f:
        f.write("class WorkerOnlyError(Exception):\n    pass\n")
    sys.path.insert(0, directory)
    import procio_worker_only  # type: ignore[import-not-found]

    raise procio_worker_only.WorkerOnlyError("raised from a class the parent lacks")


def raise_unpicklable() -> NoReturn:
    """Raise an exception that cannot be pickled at all (it holds a lock)."""
    error = RuntimeError("holds a lock")
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    raise error


def raise_system_exit(code: int) -> NoReturn:
    raise SystemExit(code)


def raise_keyboard_interrupt() -> NoReturn:
    raise KeyboardInterrupt


def open_descriptors() -> dict[int, str]:
    """Return what each of this worker's descriptors points to."""
    result = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            result[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue
    return result


def modules_loaded(names: list[str]) -> dict[str, bool]:
    return {name: name in sys.modules for name in names}


def identity_many(values: list[Any]) -> list[Any]:
    return values


def protocol_fds() -> tuple[int, int]:
    """Return this worker's request and response descriptors."""
    worker = sys.modules["_procio_worker"]
    return worker.REQUEST_FD, worker.RESPONSE_FD


def start_background_child(seconds: int) -> int:
    """Start a program in the background, as ``os.system("... &")`` would, and return its
    pid without waiting for it: it inherits whatever this worker lets it inherit."""
    return os.posix_spawn("/bin/sleep", ["sleep", str(seconds)], dict(os.environ))


def die_on_first_use(marker: str) -> None:
    """An initializer that ends the first worker it runs in (the marker file says so)."""
    if not os.path.exists(marker):
        with open(marker, "w", encoding="utf-8"):
            pass
        os._exit(5)


def forge_frames_on_stdio(text: str) -> str:
    """Write a well-formed RESULT frame carrying *text* to fd 1 and fd 2, then return."""
    wire = sys.modules["_procio_wire"]
    forged = b"".join(
        bytes(memoryview(buffer).cast("B"))
        for buffer in wire.encode_frame(wire.RESULT, wire.PickleCodec().dumps(text))
    )
    os.write(1, forged)
    os.write(2, forged)
    return "genuine"


def fork_lingering_child(seconds: float) -> int:
    """Fork a copy of this worker that holds every descriptor (the protocol pipes too),
    sleeps, and exits; return its pid."""
    child = os.fork()
    if child == 0:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        time.sleep(seconds)
        os._exit(0)
    return child
