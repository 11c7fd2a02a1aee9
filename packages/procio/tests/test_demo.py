"""``python -m procio`` tours every layer, on a terminal and piped, and leaves nothing behind."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

TIMEOUT = 50
pytestmark = pytest.mark.slow

# Lines every run prints, whatever the figures (which are never judged here).
KEY_LINES = [
    r"procio \S+ on (asyncio|uvloop|trio), Python [\d.]+",
    r"1\. Commands: run_process\(\) runs one and collects its output",
    r"   uname -sr -> exit 0: '\w+ ",
    # The timeout kept what the child had printed before it: at least its first line.
    r"   timeout=0\.35 -> TimeoutExpired, carrying the output read so far: [1-9]\d* ticks, "
    r"the last 'tick [1-9]\d*'",
    r"   sh -c 'sleep 60 & sleep 60 & wait' \(pid \d+\) started 2 sleeps; the task was cancelled",
    # Cancelled with signal_tree: the shell died of SIGTERM and neither sleep survived it.
    r"   signal_tree=True: SIGTERM to the whole group; the shell ended with -15, "
    r"sleeps still alive: 0$",
    r"2\. A child's output, decoded and split into lines as it arrives",
    r"   \+ *\d+\.\d\d s  line: 'step 1/4: caf\u00e9 \u2713'",
    r"   \+ *\d+\.\d\d s  line: 'step 4/4: caf\u00e9 \u2713'",
    r"   \+ *\d+\.\d\d s  line: 'cut inside a character: caf\ufffd'",
    r"3\. Python functions in worker processes",
    # Eight calls spread over all four workers of the pool.
    r"   a WorkerPool of 4, prestarted as the tour began, ran 8 calls of 0\.2 s each in "
    r"\d+\.\d s, on 4 worker processes",
    # The map delivered every one of its results, in the order of its input.
    r"   pool\.map over 2000 small items: 2000/2000 results, in input order; "
    r"automatic chunks of up to [1-9]\d* items$",
    r"   print\(\) in a worker shows up here:\n   \| hello world, from worker \d+$",
    r"   a worker killed mid-call -> BrokenWorkerProcess: .*SIGKILL",
    r"   the pool goes on: the next call ran in worker \d+",
    r"      json\.decoder\.JSONDecodeError: Expecting value",
    r"      raised at \".*decoder\.py\", line \d+, in \w+",
    r"More, and how fast each of these is beside AnyIO: https://\S+",
    r"Done in \d+\.\d s\.",
]
COMPARISON = re.compile(
    r"      procio +[\d.]+ (µs|ms|s) +AnyIO +[\d.]+ (µs|ms|s) +procio is [\d.]+x (faster|slower)"
)


def _environment(marker: str) -> dict[str, str]:
    return dict(os.environ, PROCIO_DEMO_RUN=marker, PYTHONIOENCODING="utf-8")


def _survivors(marker: str) -> list[int]:
    """Pids of live processes that carry *marker* in their environment (Linux view)."""
    needle = f"\0PROCIO_DEMO_RUN={marker}\0".encode()
    left = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            if needle in b"\0" + (entry / "environ").read_bytes():
                left.append(int(entry.name))
        except OSError:  # gone already, or not ours to read
            continue
    return left


def _check_tour(text: str, script_pid: int) -> None:
    for pattern in KEY_LINES:
        assert re.search(rf"(?m)^{pattern}", text), (pattern, text)
    # The tour measures nothing: figures come from the benchmark suite only.
    assert COMPARISON.findall(text) == [], text
    # The worker's pid is another process's.
    match = re.search(r"to_process\.run_sync\(os\.getpid\) -> (\d+) \(this process: (\d+)\)", text)
    assert match, text
    assert int(match.group(2)) == script_pid
    assert int(match.group(1)) != script_pid
    # The worker that printed is not this process, and the crash did not end the pool:
    # a different worker took the next call.
    printed = re.search(r"from worker (\d+)", text)
    after = re.search(r"the next call ran in worker (\d+)", text)
    assert printed, text
    assert after, text
    assert script_pid not in {int(printed.group(1)), int(after.group(1))}


def _terminal_view(raw: str) -> str:
    """What a terminal shows for *raw*: each ``\\r`` returns to the start of the line."""
    shown = []
    for line in raw.split("\n"):
        cells: list[str] = []
        column = 0
        for char in line:
            if char == "\r":
                column = 0
                continue
            if column < len(cells):
                cells[column] = char
            else:
                cells.append(char)
            column += 1
        shown.append("".join(cells).rstrip())
    return "\n".join(shown)


@pytest.mark.parametrize(("args", "loop"), [([], "asyncio"), (["--loop", "uvloop"], "uvloop")])
def test_demo_piped_prints_plain_lines_of_every_part(args: list[str], loop: str) -> None:
    marker = uuid.uuid4().hex
    with subprocess.Popen(
        [sys.executable, "-m", "procio", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_environment(marker),
    ) as demo:
        stdout, stderr = demo.communicate(timeout=TIMEOUT)
    out = stdout.decode("utf-8")
    assert demo.returncode == 0, stderr.decode(errors="replace")
    assert stderr == b""
    assert "\r" not in out
    assert "\x1b" not in out
    # Piped, each measurement is announced once, as a plain line.
    assert re.search(r"(?m)^   fanning out, 8 times \.\.\.$", out), out
    assert re.search(r"(?m)^   pool\.map, 2000 times \.\.\.$", out), out
    _check_tour(out, demo.pid)
    assert f"on {loop}," in out
    assert _survivors(marker) == []


@pytest.mark.skipif(sys.platform == "win32", reason="pseudo-terminals are POSIX only")
def test_demo_on_a_terminal_redraws_its_progress_in_place_on_trio() -> None:
    import pty

    marker = uuid.uuid4().hex
    controller, terminal = pty.openpty()
    try:
        with subprocess.Popen(
            [sys.executable, "-m", "procio", "--trio"],
            stdin=subprocess.DEVNULL,
            stdout=terminal,
            stderr=subprocess.PIPE,
            env=_environment(marker),
        ) as demo:
            os.close(terminal)
            terminal = -1
            chunks = []
            while True:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer of the terminal has closed it
                    break
                if not chunk:
                    break
                chunks.append(chunk)
            stderr = demo.stderr.read() if demo.stderr else b""
            returncode = demo.wait(timeout=TIMEOUT)
    finally:
        os.close(controller)
        if terminal != -1:
            os.close(terminal)
    assert returncode == 0, stderr.decode(errors="replace")
    assert stderr == b""
    # The terminal turns each "\n" into "\r\n"; any other "\r" is a redraw.
    raw = b"".join(chunks).decode("utf-8").replace("\r\n", "\n")
    assert re.search(r"\r   fanning out \[[#.]{20}\] \d+/8", raw), raw
    assert re.search(r"\r   pool\.map \[[#.]{20}\] \d+/2000", raw), raw
    shown = _terminal_view(raw)
    # Every progress line was wiped: none is left on the screen.
    assert not re.search(r"\[[#.]+\]", shown), shown
    assert "..." not in shown, shown
    _check_tour(shown, demo.pid)
    assert "on trio" in shown
    assert _survivors(marker) == []
