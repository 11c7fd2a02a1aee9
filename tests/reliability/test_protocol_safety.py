"""The worker protocol runs only over pipes private to the parent and its worker.

Checked on the live processes through ``/proc``: every descriptor of a worker is a pipe
(or ``/dev/null``), never a socket or a file in the file system; each of those pipes is
held by exactly two processes, the parent and that worker, so no other worker, no
unrelated child and no other user can write into it, and so nothing the parent unpickles
can come from outside the pair. The parent's ends are close-on-exec, and the worker
program imports no networking module.
"""

from __future__ import annotations

import ast
import os
import signal
import sys
from collections import defaultdict
from contextlib import suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from anyio import fail_after
from procio_process import open_process
from procio_workers import BrokenWorkerProcess, WorkerPool, _wire
from procio_workers._process_backend import WORKER_PROGRAM

from ._support import LeakGuard, descendants, tally

if TYPE_CHECKING:
    from tests.reliability import procio_reliability_funcs as funcs
else:
    import procio_reliability_funcs as funcs

pytestmark = pytest.mark.anyio

O_CLOEXEC = 0o2000000


def descriptors(pid: int) -> dict[int, str]:
    """What each descriptor of *pid* points to ({} if it cannot be read)."""
    result: dict[int, str] = {}
    try:
        names = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return result
    for name in names:
        with suppress(OSError):
            result[int(name)] = os.readlink(f"/proc/{pid}/fd/{name}")
    return result


def holders() -> dict[str, set[int]]:
    """For every pipe and socket on the machine that we may look at: the pids holding it."""
    found: defaultdict[str, set[int]] = defaultdict(set)
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            for target in descriptors(int(entry)).values():
                if target.startswith(("pipe:", "socket:")):
                    found[target].add(int(entry))
    return found


def fd_flags(fd: int) -> int:
    with open(f"/proc/self/fdinfo/{fd}", encoding="ascii") as info:
        for line in info:
            if line.startswith("flags:"):
                return int(line.split()[1], 8)
    raise AssertionError(f"no flags for fd {fd}")


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, which is Linux's")
async def test_each_worker_talks_over_pipes_only_it_and_the_parent_hold(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    me = os.getpid()
    # Children this process had already (a tracker an earlier test's library left) are
    # none of the pool's.
    earlier = {p.pid for p in descendants(recursive=False)}
    async with WorkerPool(max_workers=3, prestart=3) as pool:
        # A prestarted worker runs the parent's main module ahead of its first call, and
        # the imports that does hold a source file open for a moment. That file is no
        # leak, so the descriptors are read only once every worker has answered a call
        # (a call waits for that run): three at a time, each holding its worker, until
        # all three pids have answered.
        workers = {p.pid for p in descendants(recursive=False)} - earlier
        assert len(workers) == 3
        answered: set[int] = set()
        with fail_after(60):
            while answered != workers:
                async with anyio.create_task_group() as tg:
                    for _ in range(3):

                        async def one() -> None:
                            answered.add(await pool.run_sync(funcs.sleep, 0.05))

                        tg.start_soon(one)
                assert answered <= workers, (answered, workers)
        # An unrelated child started while the workers run must inherit none of it.
        bystander = await open_process(["sleep", "30"])
        try:
            assert {p.pid for p in descendants(recursive=False)} - {bystander.pid} - earlier == (
                workers
            )
            owners = holders()
            for worker in workers:
                fds = descriptors(worker)
                assert fds, f"cannot read the descriptors of worker {worker}"
                for fd, target in fds.items():
                    assert not target.startswith("socket:"), (worker, fd, target)
                    # Besides pipes and /dev/null, only the pidfd the worker watches its
                    # parent's exit through (named so, or pidfd:[n] on kernels with pidfs).
                    assert target.startswith(("pipe:", "pidfd:")) or target in (
                        "/dev/null",
                        "anon_inode:[pidfd]",
                    ), (worker, fd, target)
                    if target.startswith("pipe:"):
                        assert owners[target] == {me, worker}, (
                            f"pipe {target} (fd {fd} of worker {worker}) is held by "
                            f"{sorted(owners[target])}, not only by the parent {me} and its worker"
                        )
                        tally("worker pipes proved private to their pair")
                pipes = {t for t in fds.values() if t.startswith("pipe:")}
                assert len(pipes) == 4  # requests, responses, stdout, stderr
            worker_pipes = {
                t for w in workers for t in descriptors(w).values() if t.startswith("pipe:")
            }
            for fd, target in descriptors(me).items():
                if target in worker_pipes:
                    assert fd_flags(fd) & O_CLOEXEC, (
                        f"the parent's end {fd} ({target}) is inheritable"
                    )
        finally:
            bystander.kill()
            await bystander.aclose()
    guard.check()


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, which is Linux's")
async def test_the_pool_opens_no_socket(request: pytest.FixtureRequest) -> None:
    def sockets() -> set[str]:
        return {t for t in descriptors(os.getpid()).values() if t.startswith("socket:")}

    before = sockets()
    async with WorkerPool(max_workers=2) as pool:
        for _ in range(10):
            await pool.run_sync(funcs.echo, b"x" * 100_000)
        during = sockets()
    assert during <= before, f"the pool opened sockets: {during - before}"


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc, which is Linux's")
@pytest.mark.parametrize("anyio_backend", [("asyncio", {})])  # a process property: one loop
async def test_a_program_the_function_starts_does_not_get_the_protocol_pipes(
    anyio_backend: Any, request: pytest.FixtureRequest
) -> None:
    async with WorkerPool(max_workers=1) as pool:
        worker = await pool.run_sync(funcs.pid)
        request_fd, response_fd = await pool.run_sync(funcs.protocol_fds)
        protocol = {descriptors(worker)[request_fd], descriptors(worker)[response_fd]}
        grandchild = await pool.run_sync(funcs.start_background_child, 30)
        try:
            inherited = protocol & set(descriptors(grandchild).values())
            assert not inherited, f"the worker's child {grandchild} holds {inherited}"
        finally:
            os.kill(grandchild, signal.SIGKILL)


async def test_a_worker_dying_mid_response_fails_its_call_even_if_its_child_lives_on(
    anyio_backend: Any,
) -> None:
    """Its background child may hold the protocol pipes open: the parent must not wait
    for their end of file."""
    async with WorkerPool(max_workers=1) as pool:
        grandchild = await pool.run_sync(funcs.start_background_child, 30)
        try:
            # cancellable: a hang shows as the deadline's TimeoutError, not as a long wait
            with fail_after(2), pytest.raises(BrokenWorkerProcess):
                await pool.run_sync(funcs.die_mid_response, 1000, 10, cancellable=True)
            assert await pool.run_sync(funcs.echo, 1) == 1
        finally:
            os.kill(grandchild, signal.SIGKILL)


async def test_a_worker_dying_mid_request_fails_its_call_even_if_its_child_lives_on(
    anyio_backend: Any,
) -> None:
    async with WorkerPool(max_workers=1) as pool:
        grandchild = await pool.run_sync(funcs.start_background_child, 30)
        worker = await pool.run_sync(funcs.pid)
        try:
            os.kill(worker, signal.SIGSTOP)
            async with anyio.create_task_group() as tg:
                tg.start_soon(_kill_after, worker, 0.2)
                with fail_after(2), pytest.raises(BrokenWorkerProcess):
                    await pool.run_sync(funcs.echo, os.urandom(8 << 20), cancellable=True)
            assert await pool.run_sync(funcs.echo, 1) == 1
        finally:
            os.kill(grandchild, signal.SIGKILL)


async def _kill_after(pid: int, delay: float) -> None:
    await anyio.sleep(delay)
    os.kill(pid, signal.SIGKILL)


def imported_modules(path: str) -> set[str]:
    """The modules a file imports when loaded (not those imported lazily or for typing)."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module.split(".")[0])
    return names


def test_the_worker_program_imports_only_the_standard_library_and_no_networking() -> None:
    for path in (WORKER_PROGRAM, _wire.__file__):
        modules = imported_modules(path) - {"__future__"}
        assert modules <= set(sys.stdlib_module_names), (
            path,
            modules - set(sys.stdlib_module_names),
        )
        networking = modules & {
            "socket",
            "ssl",
            "multiprocessing",
            "http",
            "urllib",
            "xmlrpc",
            "asyncio",
            "selectors",
        }
        assert not networking, (path, networking)


async def test_a_fresh_worker_has_loaded_no_networking_module() -> None:
    async with WorkerPool(max_workers=1) as pool:
        loaded = await pool.run_sync(
            funcs.modules_loaded, ["socket", "ssl", "multiprocessing", "asyncio", "anyio"]
        )
    assert not any(loaded.values()), loaded


async def test_frames_forged_on_a_workers_stdout_are_output_not_replies() -> None:
    """Only the response pipe carries replies: bytes a function writes to fd 1 or 2 are
    forwarded as output, however much they look like a frame."""
    output: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

    def collect(which: int, data: bytes) -> None:
        output[which] += data

    async with WorkerPool(max_workers=1, output=collect) as pool:
        for _ in range(5):
            assert await pool.run_sync(funcs.forge_frames_on_stdio, "hijacked") == "genuine"
    for which in (1, 2):
        assert output[which].count(b"hijacked") == 5, which
    tally("forged frames on stdout and stderr ignored", 10)


def _still_there(pid: int) -> bool:
    """Whether *pid* still exists, as a live process or as a zombie nobody reaped."""
    return os.path.exists(f"/proc/{pid}")


async def test_a_worker_dying_idle_is_replaced_even_if_a_fork_of_it_lives_on() -> None:
    async with WorkerPool(max_workers=1) as pool:
        first = await pool.run_sync(os.getpid)
        fork = await pool.run_sync(funcs.fork_lingering_child, 30)
        try:
            os.kill(first, signal.SIGKILL)
            for _ in range(500):  # until the pool has reaped it, 5 s at most
                if not _still_there(first):
                    break
                await anyio.sleep(0.01)
            assert not _still_there(first)
            with fail_after(5):
                # The dead worker's pipes are still held by the fork, so nothing but
                # its exit tells the pool it is gone: the call must go to a new worker.
                second = await pool.run_sync(os.getpid)
        finally:
            os.kill(fork, signal.SIGKILL)
    assert second != first


async def test_a_worker_dying_mid_response_fails_its_call_even_if_a_fork_of_it_lives_on() -> None:
    async with WorkerPool(max_workers=1) as pool:
        fork = await pool.run_sync(funcs.fork_lingering_child, 30)
        try:
            # cancellable: a hang shows as the deadline's TimeoutError, not as a long wait
            with fail_after(2), pytest.raises(BrokenWorkerProcess):
                await pool.run_sync(funcs.die_mid_response, 1000, 10, cancellable=True)
        finally:
            os.kill(fork, signal.SIGKILL)
