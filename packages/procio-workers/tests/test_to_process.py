"""to_process: AnyIO's API on a default pool per event loop, and the seed's examples."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import CloudpickleSerializer, WorkerPool, to_process

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio

HERE = Path(__file__).resolve().parent


async def test_run_sync_reuses_one_worker_for_sequential_calls() -> None:
    first = await to_process.run_sync(funcs.sleep_and_pid, 0)
    second = await to_process.run_sync(funcs.sleep_and_pid, 0)
    assert first == second != os.getpid()


async def test_popen_keywords_start_a_fresh_worker_that_is_never_reused() -> None:
    reused = await to_process.run_sync(funcs.sleep_and_pid, 0)
    fresh = await to_process.run_sync(funcs.sleep_and_pid, 0, cwd="/")
    again = await to_process.run_sync(funcs.sleep_and_pid, 0, cwd="/")
    assert len({reused, fresh, again}) == 3
    assert await to_process.run_sync(funcs.sleep_and_pid, 0) == reused


async def test_the_default_limiter_is_one_per_cpu_and_shared() -> None:
    limiter = to_process.current_default_process_limiter()
    assert limiter.total_tokens == (os.cpu_count() or 2)
    assert to_process.current_default_process_limiter() is limiter


async def test_a_custom_limiter_bounds_the_workers() -> None:
    limiter = anyio.CapacityLimiter(1)
    pids: set[int] = set()

    async def one() -> None:
        pids.add(await to_process.run_sync(funcs.sleep_and_pid, 0.05, limiter=limiter))

    async with anyio.create_task_group() as tg:
        for _ in range(4):
            tg.start_soon(one)
    assert len(pids) == 1


async def test_the_worker_program_does_not_import_anyio() -> None:
    modules = await to_process.run_sync(funcs.modules_loaded)
    assert "anyio" not in modules
    assert "procio_workers" not in modules
    assert "_procio_wire" in modules


async def test_a_workers_start_imports_no_more_than_it_needs() -> None:
    # A worker's start is mostly imports: the worker program and its wire module use
    # typing's names in annotations only, and load their files without importlib.util.
    # (Measured against what a bare interpreter of this environment imports as it
    # starts, since a .pth hook of site-packages may import anything.)
    bare = await anyio.run_process([sys.executable, "-c", "import sys; print(*sys.modules)"])
    at_start = set(bare.stdout.decode().split())
    async with WorkerPool(max_workers=1) as pool:
        # eval is pickled by reference, so the call itself imports nothing.
        loaded = set(await pool.run_sync(eval, "list(__import__('sys').modules)"))
    added = loaded - at_start
    assert "_procio_worker" in added
    assert "_procio_wire" in added
    assert not {"typing", "importlib.util", "contextlib", "anyio"} & added, sorted(added)


async def test_large_buffers_round_trip_through_a_worker() -> None:
    data = os.urandom(4 * 1024 * 1024)
    assert await to_process.run_sync(funcs.echo, data) == data
    array = bytearray(data)
    back = await to_process.run_sync(funcs.echo, array)
    assert type(back) is bytearray
    assert back == array
    view = await to_process.run_sync(funcs.echo, memoryview(data))
    assert isinstance(view, memoryview)
    assert view.tobytes() == data
    assert await to_process.run_sync(funcs.length, data) == len(data)


async def test_cloudpickle_lets_lambdas_and_closures_through() -> None:
    offset = 5
    async with WorkerPool(max_workers=1, serializer=CloudpickleSerializer()) as pool:
        assert await pool.run_sync(lambda x: x + offset, 1) == 6

        def make_doubler() -> Callable[[int], int]:
            return lambda y: y * 2

        double = await pool.run_sync(make_doubler)
        assert double(21) == 42


def _run_script(
    tmp_path: Path, *args: str, module: str | None = None, extra_env: dict[str, str] | None = None
) -> str:
    env = dict(os.environ, **(extra_env or {}))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(HERE), *sys.path])
    command = [sys.executable, *(["-m", module] if module else []), *args]
    completed = subprocess.run(
        command, cwd=tmp_path, env=env, capture_output=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr.decode()
    return completed.stdout.decode()


SEED_CLOSE_FDS = """
import os
from functools import partial

from anyio import create_task_group, run, to_thread
from procio_workers import to_process


def cpu_intensive_function(receiver, sender):
    data = os.read(receiver, 1024)
    os.write(sender, data + b", World!")

async def main():
    receiver0, sender0 = os.pipe()
    receiver1, sender1 = os.pipe()
    os.set_inheritable(receiver0, True)
    os.set_inheritable(sender1, True)
    async with create_task_group() as tg:
        tg.start_soon(partial(to_process.run_sync, cpu_intensive_function, receiver0, sender1,
                              close_fds=False))
        os.write(sender0, b"Hello")
        data = await to_thread.run_sync(os.read, receiver1, 1024)
    print(data)  # b'Hello, World!'

if __name__ == '__main__':
    run(main, backend=BACKEND)
"""


async def test_the_seed_close_fds_example_prints_hello_world(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    script = tmp_path / "seed.py"
    script.write_text(SEED_CLOSE_FDS.replace("BACKEND", repr(anyio_backend[0])))
    out = await anyio.to_thread.run_sync(_run_script, tmp_path, str(script))
    assert out.strip() == "b'Hello, World!'"


MAIN_SCRIPT = """
import os
import sys
import anyio
from procio_workers import to_process

def square(x):
    return x * x, __name__

class Point:
    def __init__(self, x):
        self.x = x

def make_point(x):
    return Point(x)

async def main():
    value, name = await to_process.run_sync(square, 7)
    point = await to_process.run_sync(make_point, 3)
    print(value, name, type(point).__name__, point.x, isinstance(point, Point))

if __name__ == "__main__":
    anyio.run(main)
"""


async def test_functions_and_classes_of_a_main_script_work(tmp_path: Path) -> None:
    script = tmp_path / "script.py"
    script.write_text(MAIN_SCRIPT)
    out = await anyio.to_thread.run_sync(_run_script, tmp_path, str(script))
    assert out.split() == ["49", "__mp_main__", "Point", "3", "True"]


async def test_a_main_module_run_with_dash_m_and_relative_imports_works(tmp_path: Path) -> None:
    package = tmp_path / "mypkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("FACTOR = 3\n")
    (package / "app.py").write_text(
        MAIN_SCRIPT.replace("import os\n", "import os\nfrom .helper import FACTOR\n").replace(
            "return x * x, __name__", "return x * FACTOR, __name__"
        )
    )
    out = await anyio.to_thread.run_sync(lambda: _run_script(tmp_path, module="mypkg.app"))
    assert out.split() == ["21", "__mp_main__", "Point", "3", "True"]


async def test_a_dash_c_parent_can_send_its_own_functions(tmp_path: Path) -> None:
    code = MAIN_SCRIPT.replace('if __name__ == "__main__":\n    ', "")
    code = code.replace("point = await to_process.run_sync(make_point, 3)", "point = Point(3)")
    out = await anyio.to_thread.run_sync(_run_script, tmp_path, "-c", code)
    assert out.split()[0] == "49"


async def test_a_console_script_style_main_works(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (tmp_path / "tool_impl.py").write_text(
        MAIN_SCRIPT.replace('if __name__ == "__main__":', "def cli():")
    )
    launcher = bin_dir / "tool"
    launcher.write_text(
        "import sys\nfrom tool_impl import cli\nif __name__ == '__main__':\n    sys.exit(cli())\n"
    )
    out = await anyio.to_thread.run_sync(_run_script, tmp_path, str(launcher))
    assert out.split() == ["49", "tool_impl", "Point", "3", "True"]


LOOP_END = """
import anyio
from procio_workers import to_process
import procio_workers_testfuncs as funcs

async def main():
    return await to_process.run_sync(funcs.sleep_and_pid, 0)

if __name__ == "__main__":
    pid = anyio.run(main, backend=BACKEND)
    # The loop has ended and this process goes on: the worker must be gone and reaped
    # already, not left to notice later that its parent exited.
    print(pid, pid in funcs.child_pids(), flush=True)
"""


async def test_workers_end_with_their_event_loop(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    script = tmp_path / "loop_end.py"
    script.write_text(LOOP_END.replace("BACKEND", repr(anyio_backend[0])))
    out = await anyio.to_thread.run_sync(_run_script, tmp_path, str(script))
    pid, still_a_child = out.split()
    assert int(pid) > 0
    assert still_a_child == "False", "the worker outlived the event loop that used it"


async def test_each_event_loop_gets_its_own_default_pool(
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    async def worker_pid() -> int:
        return await to_process.run_sync(funcs.sleep_and_pid, 0)

    def in_a_new_loop() -> int:
        return anyio.run(worker_pid, backend=anyio_backend[0], backend_options=anyio_backend[1])

    here = await worker_pid()
    first = await anyio.to_thread.run_sync(in_a_new_loop)
    second = await anyio.to_thread.run_sync(in_a_new_loop)
    # The loops that ended took their workers with them (reaped: not even zombies are
    # left); this loop still has its own.
    assert len({here, first, second}) == 3
    assert not {first, second} & funcs.child_pids()
    assert await worker_pid() == here


async def test_pass_fds_reach_a_fresh_worker_beside_the_protocol_pipes() -> None:
    read_end, write_end = os.pipe()
    try:
        written = await to_process.run_sync(
            funcs.write_fd, write_end, b"ping", pass_fds=(write_end,)
        )
        assert written == 4
        assert os.read(read_end, 10) == b"ping"
    finally:
        os.close(read_end)
        os.close(write_end)


async def test_standard_streams_cannot_be_redirected_by_popen_keywords() -> None:
    with pytest.raises(TypeError, match="stdout="):
        await to_process.run_sync(funcs.echo, 1, stdout=subprocess.DEVNULL)


UNGUARDED = """
import os
import sys

import anyio
from procio_workers import to_process


def double(x):
    return x * 2


# Every process that runs this module notes its pid. Starting workers at import time,
# with no `if __name__ == "__main__":` guard, is the mistake under test.
with open(sys.argv[1] if __name__ == "__main__" else os.environ["PIDS_FILE"], "a") as f:
    f.write(f"{os.getpid()}\\n")


async def main():
    print(await to_process.run_sync(double, 21))


anyio.run(main, backend=BACKEND)
"""


async def test_a_main_module_starting_workers_on_import_fails_clearly(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    # Run by the worker as __mp_main__, such a module would start a worker of its own,
    # which would start another, without end. procio refuses to start that second worker.
    pids_file = tmp_path / "pids"
    script = tmp_path / "unguarded.py"
    script.write_text(UNGUARDED.replace("BACKEND", repr(anyio_backend[0])))
    env = dict(os.environ, PIDS_FILE=str(pids_file))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    completed = await anyio.run_process(
        [sys.executable, str(script), str(pids_file)], env=env, check=False
    )
    assert completed.returncode != 0
    stderr = completed.stderr.decode()
    assert 'if __name__ == "__main__":' in stderr
    assert "while it ran the parent's main module" in stderr
    pids = [int(line) for line in pids_file.read_text().split()]
    assert len(pids) == 2  # the program and its one worker, which ran the module
    for _ in range(200):  # the worker leaves when it sees its parent gone
        if not any(_alive(pid) for pid in pids):
            break
        await anyio.sleep(0.05)
    assert not any(_alive(pid) for pid in pids)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


MAIN_AHEAD = """
import json
import os
import sys

import anyio
from procio_workers import WorkerPool

if __name__ != "__main__":
    # Run in a worker, as __mp_main__: every run is noted.
    with open(os.environ["MAIN_RUNS"], "a") as runs:
        runs.write(f"{os.getpid()}\\n")
    if os.environ.get("MAIN_FAILS"):
        raise LookupError("the main module failed in the worker")


def from_main():
    return os.getpid()


def runs():
    with open(os.environ["MAIN_RUNS"]) as noted:
        return [int(line) for line in noted.read().split()]


async def outcome(pool, func):
    try:
        return ["ok", await pool.run_sync(func)]
    except Exception as exc:
        return ["error", type(exc).__name__, str(exc)]


async def main():
    async with WorkerPool(max_workers=1, prestart=int(sys.argv[1])) as pool:
        # os.getpid needs nothing of this module: a worker that runs it lazily has not
        # run it once this call returns.
        pid = await pool.run_sync(os.getpid)
        before = runs()
        first = await outcome(pool, from_main)
        second = await outcome(pool, from_main)
        print(json.dumps([pid, before, first, second, runs()]))


if __name__ == "__main__":
    if sys.argv[2] == "uvloop":
        import uvloop

        anyio.run(main, backend_options={"loop_factory": uvloop.new_event_loop})
    else:
        anyio.run(main, backend=sys.argv[2])
"""


def _run_main_ahead(
    tmp_path: Path, backend: tuple[str, dict[str, object]], prestart: int, *, fails: bool
) -> list[Any]:
    loop = "uvloop" if "loop_factory" in backend[1] else backend[0]
    script = tmp_path / "ahead.py"
    script.write_text(MAIN_AHEAD)
    runs = tmp_path / "runs"
    runs.write_text("")
    extra_env = {"MAIN_RUNS": str(runs), "MAIN_FAILS": "1" if fails else ""}
    out = _run_script(tmp_path, str(script), str(prestart), loop, extra_env=extra_env)
    result: list[Any] = json.loads(out)
    return result


async def test_a_prestarted_worker_runs_the_parents_main_before_its_first_call(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    # Started ahead of need, a worker runs the parent's main module at once (as AnyIO's
    # workers do), not on the first call that needs it: that call then finds it ready.
    pid, before, first, second, after = await anyio.to_thread.run_sync(
        lambda: _run_main_ahead(tmp_path, anyio_backend, 1, fails=False)
    )
    assert before == [pid], "the prestarted worker had not run the main module"
    assert first == second == ["ok", pid]
    assert after == [pid]  # once only


async def test_a_worker_started_for_a_call_runs_the_parents_main_only_when_needed(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]]
) -> None:
    # Started for a call, a worker runs the main module only when a call needs one of
    # its names: a call of anything else does not pay for its imports.
    pid, before, first, second, after = await anyio.to_thread.run_sync(
        lambda: _run_main_ahead(tmp_path, anyio_backend, 0, fails=False)
    )
    assert before == []
    assert first == second == ["ok", pid]
    assert after == [pid]


@pytest.mark.parametrize("prestart", [0, 1], ids=["started-for-a-call", "prestarted"])
async def test_a_main_module_that_fails_in_the_worker_fails_the_call_that_needs_it(
    tmp_path: Path, anyio_backend: tuple[str, dict[str, object]], prestart: int
) -> None:
    # Run ahead or when needed, a main module that raises is reported by the first call
    # that needs it, with its own exception; later calls find the module without the
    # name (it ran once), and the worker goes on serving.
    pid, before, first, second, after = await anyio.to_thread.run_sync(
        lambda: _run_main_ahead(tmp_path, anyio_backend, prestart, fails=True)
    )
    assert before == ([pid] if prestart else [])
    assert first == [
        "error",
        "SerializationError",
        "the call's arguments could not be rebuilt in the worker: "
        "builtins.LookupError: the main module failed in the worker",
    ]
    assert second[:2] == ["error", "SerializationError"]
    assert "AttributeError: Can't get attribute 'from_main'" in str(second[2])
    assert after == [pid]


STUCK_MAIN = """
import os
import sys

import anyio
from procio_workers import WorkerPool

if __name__ != "__main__":
    with open(os.environ["MAIN_RUNS"], "a") as runs:
        runs.write(f"{os.getpid()}\\n")
    import time
    time.sleep(3600)  # a main module that never finishes its import


def gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def main():
    async with WorkerPool(max_workers=1, prestart=1) as pool:
        while not open(os.environ["MAIN_RUNS"]).read():
            await anyio.sleep(0.01)
        stuck = int(open(os.environ["MAIN_RUNS"]).read())
        if sys.argv[1] == "cancel":
            # The call waits behind the main module; cancelled, it kills the worker.
            with anyio.move_on_after(0.2):
                await pool.run_sync(os.getpid, cancellable=True)
            print(gone(stuck), pool.statistics().workers)
    print(gone(stuck))


if __name__ == "__main__":
    anyio.run(main)
"""


@pytest.mark.parametrize("how", ["close", "cancel"])
async def test_a_prestarted_worker_stuck_in_the_main_module_is_still_ended(
    tmp_path: Path, how: str
) -> None:
    # A main module whose import never ends holds its prestarted worker: a cancellable
    # call cancelled meanwhile kills it, and the pool's closing ends it; nothing is left.
    script = tmp_path / "stuck.py"
    script.write_text(STUCK_MAIN)
    runs = tmp_path / "runs"
    runs.write_text("")
    env = dict(os.environ, MAIN_RUNS=str(runs))
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    with anyio.fail_after(60):  # against a hang only: it takes about 2 s
        completed = await anyio.run_process(
            [sys.executable, str(script), how], env=env, cwd=tmp_path, check=False
        )
    assert completed.returncode == 0, completed.stderr.decode()
    expected = ["True", "0", "True"] if how == "cancel" else ["True"]
    assert completed.stdout.decode().split() == expected
    assert not _alive(int(runs.read_text()))
