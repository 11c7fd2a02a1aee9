"""Every example of AnyIO's subprocess page runs on procio with only its imports changed.

Each file under ``examples/`` is compared with its block of the page (everything but
the import lines must be identical), then run as a real script in a fresh interpreter,
and its output checked. No process the script started may outlive it.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import procio
import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
SEED = ROOT.parent / "shared" / "seed" / "subprocesses.rst"

# procio-process's pytest plugin: no test here may leave a process or an fd behind.
pytestmark = pytest.mark.procio_leak_check

# Which block of the page (in order of appearance) each example reproduces.
BLOCK_OF_EXAMPLE = {
    "run_shell_command.py": 0,
    "run_command_directly.py": 1,
    "stream_process_output.py": 2,
    "run_function_in_worker.py": 3,
    "worker_inherits_fds.py": 4,
}
TIMEOUT = 45
needs_ps = pytest.mark.skipif(
    shutil.which("ps") is None, reason="the example runs `ps`, which is not installed here"
)


def _seed_blocks() -> list[str]:
    """Return the Python blocks of the page: the indented text after each ``::``."""
    lines = SEED.read_text(encoding="utf-8").splitlines()
    blocks: list[str] = []
    for index, line in enumerate(lines):
        if not line.endswith("::") or line.lstrip().startswith(".."):
            continue
        body: list[str] = []
        for following in lines[index + 1 :]:
            if following and not following[0].isspace():
                break
            body.append(following)
        code = textwrap.dedent("\n".join(body)).strip("\n")
        if "import" in code:
            blocks.append(code + "\n")
    return blocks


def _is_import_of(line: str, modules: tuple[str, ...]) -> bool:
    return re.match(rf"(from|import) ({'|'.join(modules)})(\.| |$)", line) is not None


def _imported_names(source: str) -> dict[str, str]:
    """Map each name imported from anyio or procio to the module it comes from."""
    names: dict[str, str] = {}
    for node in ast.walk(ast.parse(source)):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.split(".")[0] in {"anyio", "procio"}
        ):
            for alias in node.names:
                names[alias.asname or alias.name] = node.module
    return names


def _run_example(name: str) -> tuple[subprocess.Popen[str], str]:
    """Run *name* as a script; return its handle (exited) and its standard output."""
    marker = uuid.uuid4().hex
    env = dict(os.environ, PROCIO_EXAMPLE_RUN=marker)
    with subprocess.Popen(
        [sys.executable, str(EXAMPLES / name)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=EXAMPLES,
    ) as script:
        try:
            out, err = script.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            script.kill()
            out, err = script.communicate()
            pytest.fail(f"{name} did not finish in {TIMEOUT} s:\n{out}\n{err}")
    assert script.returncode == 0, f"{name} exited with {script.returncode}:\n{err}"
    assert err == "", f"{name} wrote to stderr:\n{err}"
    assert _survivors(marker) == [], f"{name} left processes behind"
    return script, out


def _survivors(marker: str) -> list[int]:
    """Pids of the processes that still carry the environment marker of one example run.

    Read from ``/proc``; elsewhere the check is not made (it is a Linux-only view).
    """
    needle = f"\0PROCIO_EXAMPLE_RUN={marker}\0".encode()
    left = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            environ = b"\0" + (entry / "environ").read_bytes()
        except OSError:  # gone already, or not ours to read
            continue
        if needle in environ:
            left.append(int(entry.name))
    return left


def _ps_lists(output: str, pid: int) -> None:
    """Check that *output* is a `ps` listing that shows the script itself and `ps`."""
    assert re.match(r"\s*PID\s+TTY\s+TIME\s+CMD\n", output), output[:200]
    # A line of the listing: pid, terminal, CPU time, command.
    assert re.search(rf"(?m)^\s*{pid} +\S+ +[\d:-]+ \S", output), (pid, output)
    assert re.search(r"(?m)\d[\d:-]* ps$", output), output


# The seed is AnyIO's page that the examples come from. It sits beside the repository
# where procio is developed and checked (CI has it), not inside it: it is AnyIO's text,
# not procio's. In a bare clone these comparisons cannot run; the examples still do.
needs_seed = pytest.mark.skipif(
    not SEED.is_file(), reason=f"the seed page {SEED} is not beside this checkout"
)


@needs_seed
@pytest.mark.parametrize("name", sorted(BLOCK_OF_EXAMPLE))
def test_example_is_the_seed_with_only_its_imports_changed(name: str) -> None:
    seed = _seed_blocks()[BLOCK_OF_EXAMPLE[name]]
    example = (EXAMPLES / name).read_text(encoding="utf-8")
    kept_from_seed = [line for line in seed.splitlines() if not _is_import_of(line, ("anyio",))]
    kept_from_example = [
        line for line in example.splitlines() if not _is_import_of(line, ("anyio", "procio"))
    ]
    assert kept_from_example == kept_from_seed

    # The same names are imported, and every one that procio offers comes from procio.
    seed_names = _imported_names(seed)
    example_names = _imported_names(example)
    assert set(example_names) == set(seed_names)
    for imported, module in example_names.items():
        expected = "procio" if imported in procio.__all__ else seed_names[imported]
        assert module == expected, (imported, module)


def test_every_example_file_is_checked() -> None:
    assert {path.name for path in EXAMPLES.glob("*.py")} == set(BLOCK_OF_EXAMPLE)


@needs_seed
def test_every_seed_example_has_a_file() -> None:
    assert len(_seed_blocks()) == len(BLOCK_OF_EXAMPLE)


@needs_ps
def test_run_shell_command_prints_the_ps_listing() -> None:
    script, out = _run_example("run_shell_command.py")
    _ps_lists(out, script.pid)


@needs_ps
def test_run_command_directly_prints_the_ps_listing() -> None:
    script, out = _run_example("run_command_directly.py")
    _ps_lists(out, script.pid)


@needs_ps
def test_stream_process_output_prints_the_decoded_listing() -> None:
    script, out = _run_example("stream_process_output.py")
    # Each decoded chunk is printed with a newline of its own, which may fall inside a
    # line of the listing, so the lines are looked for in the output without newlines.
    assert re.match(r"\s*PID\s+TTY\s+TIME\s+CMD\n", out), out[:200]
    flat = out.replace("\n", "")
    assert re.search(rf"{script.pid} +\S+ +\d[\d:-]* \S", flat), (script.pid, out)
    # The next line's pid may follow "ps" directly when it has as many digits as its column.
    assert re.search(r"\d[\d:-]* ps(?![A-Za-z_/.:-])", flat), out


def test_run_function_in_worker_prints_the_result() -> None:
    _, out = _run_example("run_function_in_worker.py")
    assert out == "Hello, world!\n"


@pytest.mark.skipif(
    not sys.platform.startswith("linux"),
    reason="the page says this example works on Linux, where close_fds=False keeps the fds",
)
def test_worker_inherits_fds_prints_the_echo() -> None:
    _, out = _run_example("worker_inherits_fds.py")
    assert out == "b'Hello, World!'\n"
