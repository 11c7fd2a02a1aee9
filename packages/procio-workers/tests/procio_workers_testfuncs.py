"""Functions the tests run in workers (importable by name there), and leak checks."""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, NoReturn


class CustomError(Exception):
    """An exception class both sides can import."""

    def __init__(self, code: int) -> None:
        super().__init__(f"custom failure {code}")
        self.code = code


def echo(value: object) -> object:
    return value


def pid_and_echo(value: object) -> tuple[int, object]:
    return os.getpid(), value


def sleep_and_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def fail_deep(code: int) -> NoReturn:
    def inner_helper_frame() -> NoReturn:
        raise CustomError(code)

    inner_helper_frame()


def exit_with(code: int) -> NoReturn:
    sys.exit(code)


def interrupt() -> NoReturn:
    raise KeyboardInterrupt


def kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)
    time.sleep(10)


def die_with_stderr(code: int, text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
    os._exit(code)


def print_things(text: str, size: int = 0) -> int:
    print(text)
    if size:
        sys.stdout.write("x" * size + "\n")
    os.write(1, b"raw stdout\n")
    os.write(2, b"raw stderr\n")
    print("to stderr", file=sys.stderr)
    return os.getpid()


def unpicklable_result() -> object:
    return lambda: None


def raise_unimportable(directory: str) -> None:
    sys.path.insert(0, directory)
    import worker_only_module  # type: ignore[import-not-found]

    raise worker_only_module.OnlyHereError("from a module the parent cannot import")


def write_to_protocol(data: bytes, then_exit: bool) -> None:
    worker = sys.modules["_procio_worker"]
    os.write(worker.RESPONSE_FD, data)
    if then_exit:
        os._exit(0)
    time.sleep(30)


def modules_loaded() -> list[str]:
    return sorted(sys.modules)


def worker_state() -> dict[str, Any]:
    return {"path": list(sys.path), "executable": sys.executable, "stdin": os.read(0, 10)}


def record_initializer(path: str, tag: str) -> None:
    with open(path, "a", encoding="utf-8") as f:
        f.write(f"{tag}:{os.getpid()}\n")


def sleep_then_write(seconds: float, path: str) -> str:
    time.sleep(seconds)
    with open(path, "w", encoding="utf-8") as f:
        f.write("done")
    return "done"


def announce_then_write(started: str, seconds: float, path: str) -> str:
    """Create the file *started*, then do what :func:`sleep_then_write` does."""
    with open(started, "w", encoding="utf-8"):
        pass
    return sleep_then_write(seconds, path)


def signal_disposition(signum: int) -> int:
    return int(signal.getsignal(signum))  # type: ignore[arg-type]


def getpriority() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


def length(data: bytes) -> int:
    return len(data)


# --- leak checks (parent side) ---


def open_fds() -> set[int]:
    """Return the file descriptors open in this process now."""
    return {int(name) for name in os.listdir("/proc/self/fd")}


def proc_stat(pid: int) -> tuple[str, int]:
    """The state letter of *pid*'s main thread and its parent pid, from /proc.

    Raises OSError once the process is gone.
    """
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    state, ppid = stat[stat.rfind(b")") + 2 :].split(b" ", 2)[:2]
    return state.decode(), int(ppid)


def _process_table() -> dict[int, tuple[int, str]]:
    """Map every pid to (parent pid, state letter), from /proc."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            state, ppid = proc_stat(int(entry))
        except OSError:
            continue  # exited while we looked
        table[int(entry)] = (ppid, state)
    return table


def child_pids() -> set[int]:
    """Return this process's children, zombies included, at any depth."""
    table = _process_table()
    found: set[int] = set()
    frontier = {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - found
        found |= frontier
    return found


class LeakGuard:
    """Snapshot fds and children (create it once the event loop runs); ``check`` compares."""

    def __init__(self) -> None:
        self.fds = open_fds()
        self.children = child_pids()

    def check(self) -> None:
        """Fail if a child process or a file descriptor was left behind."""
        new_children = child_pids() - self.children
        assert not new_children, f"children left behind: {new_children}"
        leaked = open_fds() - self.fds
        assert not leaked, f"descriptors left open: {_describe(leaked)}"


def _describe(fds: set[int]) -> dict[int, str]:
    described = {}
    for fd in fds:
        try:
            described[fd] = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            described[fd] = "?"
    return described


def pid_gone(pid: int) -> bool:
    """Whether *pid* no longer runs (a zombie waiting for a parent other than us counts)."""
    entry = _process_table().get(pid)
    return entry is None or entry[1] == "Z"


def pid_stopped(pid: int) -> bool:
    """Whether the main thread of *pid* is stopped (by SIGSTOP), not merely signalled.

    A worker asleep in a blocking read of its request pipe takes a call that arrives
    before the stop lands: only once stopped does it read nothing more.
    """
    return proc_stat(pid)[0] in ("T", "t")


def pid_exists(pid: int) -> bool:
    """Whether *pid* exists at all, as a live process or a zombie nobody reaped."""
    return os.path.exists(f"/proc/{pid}")


def concat(a: str, b: bytes, c: int) -> tuple[str, bytes, int]:
    return a, b, c


def write_fd(fd: int, data: bytes) -> int:
    return os.write(fd, data)


def protocol_fds_inheritable() -> tuple[bool, bool]:
    worker = sys.modules["_procio_worker"]
    return os.get_inheritable(worker.REQUEST_FD), os.get_inheritable(worker.RESPONSE_FD)


# --- functions of the backend safety tests ---


def raise_long(length: int) -> NoReturn:
    """Raise a ValueError whose message is *length* characters long."""
    raise ValueError("x" * length)


def _fd_targets() -> dict[int, str]:
    targets = {}
    for name in os.listdir("/proc/self/fd"):
        try:
            targets[int(name)] = os.readlink(f"/proc/self/fd/{name}")
        except OSError:
            continue  # the descriptor of the listing itself
    return targets


def worker_pipes() -> dict[str, list[str]]:
    """Return the pipes this worker holds: its own four, and every pipe it holds at all."""
    worker = sys.modules["_procio_worker"]
    targets = _fd_targets()
    own = [targets[fd] for fd in (worker.REQUEST_FD, worker.RESPONSE_FD, 1, 2)]
    return {"own": own, "all": sorted(t for t in targets.values() if t.startswith("pipe:"))}


def fork_lingering(seconds: float) -> int:
    """Fork a copy of this worker that keeps every descriptor (the protocol pipes too)."""
    child = os.fork()
    if child == 0:
        time.sleep(seconds)
        os._exit(0)
    return child


def spawn_sleeper(seconds: int) -> int:
    """Start ``sleep`` in the background (not waited for) and return its pid."""
    return os.posix_spawn("/bin/sleep", ["sleep", str(seconds)], dict(os.environ))


def print_bytes(size: int) -> int:
    """Write *size* bytes of numbered lines to stdout (flushed), return the byte count."""
    written = 0
    line = 0
    while written < size:
        text = f"{line:09d}\n"
        sys.stdout.write(text)
        written += len(text)
        line += 1
    sys.stdout.flush()
    return written
