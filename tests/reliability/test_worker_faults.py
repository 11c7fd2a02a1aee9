"""Faults in worker processes: killed at each point of the protocol, exiting abruptly,
cancelled while starting, and left busy when the event loop ends; a parent whose own
standard output is full or closed.

In every case the call ends with its result or a typed error, the pool goes on with a
new worker, and once the pool (or the event loop) is gone no worker is left: no child,
no zombie, no open descriptor.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from contextlib import suppress
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import pytest
from anyio import create_task_group, fail_after, move_on_after
from anyio.abc import Process, TaskGroup
from procio_workers import BrokenWorkerProcess, WorkerPool, to_process
from procio_workers._hosting import spawn_loop_task
from procio_workers.abc import Launcher

from ._support import (
    LeakGuard,
    descendants,
    open_fds,
    pid_alive,
    pid_exists,
    replay_hint,
    rng_for,
    scaled,
    tally,
)

if TYPE_CHECKING:
    from tests.reliability import procio_reliability_funcs as funcs
else:
    import procio_reliability_funcs as funcs

pytestmark = pytest.mark.anyio


async def wait_until_dead(pid: int) -> None:
    """Wait until *pid* has exited (a zombie waiting for its reaper counts)."""
    with fail_after(5):
        while pid_alive(pid):  # noqa: ASYNC110 - a pid has no event to wait on
            await anyio.sleep(0.005)


async def assert_pool_recovers(pool: WorkerPool, dead_pid: int | None = None) -> None:
    new_pid = await pool.run_sync(funcs.pid)
    assert new_pid != dead_pid
    assert await pool.run_sync(funcs.echo, "still working") == "still working"


class KillingLauncher(Launcher):
    """Starts workers normally, but SIGKILLs the next few right after (or soon after)."""

    def __init__(self, kills: int, delays: Sequence[float] = ()) -> None:
        self.kills = kills
        self.delays = list(delays)
        self.killed: list[int] = []
        #: Where delayed kills wait; without it every kill is immediate.
        self.pending: TaskGroup | None = None

    async def launch(
        self,
        argv: Sequence[str],
        *,
        pass_fds: Sequence[int],
        stdout: int,
        stderr: int,
        env: Mapping[str, str] | None,
        popen_kwargs: Mapping[str, Any],
    ) -> Process:
        process = await super().launch(
            argv,
            pass_fds=pass_fds,
            stdout=stdout,
            stderr=stderr,
            env=env,
            popen_kwargs=popen_kwargs,
        )
        if self.kills > 0:
            self.kills -= 1
            delay = self.delays.pop(0) if self.delays else 0.0
            self.killed.append(process.pid)
            if delay > 0 and self.pending is not None:
                # The kill lands while the handshake (or the first call) is under way.
                self.pending.start_soon(self._kill_later, process, delay)
            else:
                process.kill()
        return process

    @staticmethod
    async def _kill_later(process: Process, delay: float) -> None:
        await anyio.sleep(delay)
        if process.returncode is None:
            process.kill()


async def test_a_worker_killed_before_its_handshake_fails_only_that_call(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    launcher = KillingLauncher(kills=1)
    async with WorkerPool(max_workers=1, launcher=launcher) as pool:
        with pytest.raises(BrokenWorkerProcess) as caught:
            await pool.run_sync(funcs.pid)
        assert caught.value.pid == launcher.killed[0]
        assert caught.value.signal == signal.SIGKILL
        await assert_pool_recovers(pool, launcher.killed[0])
    guard.check()
    tally("workers killed before the handshake")


async def test_workers_killed_at_random_moments_of_their_start(
    request: pytest.FixtureRequest,
) -> None:
    rng = rng_for(request.node.name)
    count = scaled(12)
    guard = LeakGuard(request.node.name)
    # A third of the kills are immediate (the call must fail); the others land at a
    # random moment of the start, the handshake, the call or the idle time after it.
    delays = [0.0 if n % 3 == 0 else rng.uniform(0, 0.08) for n in range(count)]
    launcher = KillingLauncher(kills=count, delays=delays)
    outcomes = {"result": 0, "broken": 0}
    async with (
        create_task_group() as pending,
        WorkerPool(max_workers=1, max_tasks_per_worker=1, launcher=launcher) as pool,
    ):
        launcher.pending = pending
        for _ in range(count):
            try:
                assert await pool.run_sync(funcs.echo, 42) == 42
                outcomes["result"] += 1
            except BrokenWorkerProcess as error:
                assert error.pid in launcher.killed, replay_hint()
                outcomes["broken"] += 1
        await assert_pool_recovers(pool)
    guard.check()
    assert outcomes["broken"] >= delays.count(0.0), f"{outcomes}; {replay_hint()}"
    tally("workers killed while starting", count)


def block_until_dead(pid: int) -> None:
    """Wait for *pid* to exit without letting the event loop run meanwhile."""
    deadline = time.monotonic() + 5
    while pid_alive(pid):
        assert time.monotonic() < deadline, f"worker {pid} survived SIGKILL"
        time.sleep(0.002)


async def test_a_worker_killed_while_idle_is_replaced_without_failing_a_call(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=2) as pool:
        for _ in range(scaled(5)):
            pid = await pool.run_sync(funcs.pid)
            os.kill(pid, signal.SIGKILL)
            await wait_until_dead(pid)
            await anyio.sleep(0.05)  # the loop has had every chance to notice
            # The pool finds the idle worker dead and starts another: the call succeeds.
            assert await pool.run_sync(funcs.pid) != pid
            tally("workers killed while idle")
    guard.check()


async def test_a_call_right_after_an_idle_worker_died_does_not_fail(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        os.kill(pid, signal.SIGKILL)
        block_until_dead(pid)  # dead before the call, and the loop has not run since
        assert await pool.run_sync(funcs.pid) != pid
    guard.check()


async def test_a_worker_killed_mid_request_fails_that_call(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        # Stopped, the worker reads nothing: the 8 MiB request cannot fit in the pipe,
        # so the parent is still writing it when the worker dies.
        os.kill(pid, signal.SIGSTOP)
        outcome: list[object] = []

        async def call() -> None:
            try:
                outcome.append(await pool.run_sync(funcs.echo, os.urandom(8 << 20)))
            except BrokenWorkerProcess as exc:
                outcome.append(exc)

        with fail_after(10):
            async with create_task_group() as tg:
                tg.start_soon(call)
                await anyio.sleep(0.2)
                assert not outcome, "the call ended although its worker was stopped"
                os.kill(pid, signal.SIGKILL)
        [error] = outcome
        assert isinstance(error, BrokenWorkerProcess), error
        assert error.pid == pid
        assert error.signal == signal.SIGKILL
        await assert_pool_recovers(pool, pid)
    guard.check()
    tally("workers killed mid-request")


async def test_workers_killed_at_random_moments_of_a_large_request(
    request: pytest.FixtureRequest,
) -> None:
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    outcomes = {"result": 0, "broken": 0}
    async with WorkerPool(max_workers=1) as pool:
        for _ in range(scaled(12)):
            pid = await pool.run_sync(funcs.pid)
            payload = bytes([rng.randrange(256)]) * rng.randrange(1, 32 << 20)
            async with create_task_group() as tg:
                # The kill lands while the request is written, read, echoed, or after.
                tg.start_soon(_kill_after, pid, rng.uniform(0, 0.04))
                try:
                    result = await pool.run_sync(funcs.echo, payload)
                except BrokenWorkerProcess as error:
                    assert error.pid == pid, replay_hint()
                    assert error.signal == signal.SIGKILL, replay_hint()
                    outcomes["broken"] += 1
                else:
                    assert result == payload, replay_hint()
                    outcomes["result"] += 1
        await assert_pool_recovers(pool)
    guard.check()
    assert outcomes["broken"] > 0, f"{outcomes}; {replay_hint()}"
    tally("workers killed at random points", sum(outcomes.values()))


def _sleep_then_kill(pid: int, delay: float) -> None:
    time.sleep(delay)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


async def _kill_after(pid: int, delay: float) -> None:
    # The clock runs in a thread, not on the event loop: a call that moves megabytes
    # keeps the loop busy for tens of milliseconds at a stretch, and a timer there would
    # fire only once the call had ended, so the kill would never land during it.
    await anyio.to_thread.run_sync(_sleep_then_kill, pid, delay)
    # Dead before the next call: a kill still in flight would fail that call instead.
    await wait_until_dead(pid)


@pytest.mark.parametrize(
    ("announced", "sent"), [(1000, 0), (1000, 999), (1 << 20, 70_000), (1 << 62, 0)]
)
async def test_a_worker_killed_mid_response_fails_that_call(
    request: pytest.FixtureRequest, announced: int, sent: int
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=1) as pool:
        pid = await pool.run_sync(funcs.pid)
        with pytest.raises(BrokenWorkerProcess) as caught:
            await pool.run_sync(funcs.die_mid_response, announced, sent)
        assert caught.value.pid == pid
        # A frame past the limit is refused at once; the parent kills the worker itself
        # if it has not died yet. Otherwise the worker's own SIGKILL shows.
        assert caught.value.signal == signal.SIGKILL
        await assert_pool_recovers(pool, pid)
        assert pool.statistics().broken == 1
    guard.check()
    tally("workers killed mid-response")


async def test_workers_killed_at_random_moments_of_a_large_response(
    request: pytest.FixtureRequest,
) -> None:
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    outcomes = {"result": 0, "broken": 0}
    async with WorkerPool(max_workers=1) as pool:
        for _ in range(scaled(12)):
            size = rng.randrange(1, 32 << 20)
            delay = rng.uniform(0, 0.06)
            try:
                result = await pool.run_sync(funcs.big_result_killed_after, size, delay)
            except BrokenWorkerProcess as error:
                assert error.signal == signal.SIGKILL, replay_hint()
                outcomes["broken"] += 1
            else:
                assert len(result) == size, replay_hint()
                outcomes["result"] += 1
        # Some timers are still pending in idle workers: those die while idle, and the
        # pool must replace them without failing a call.
        await anyio.sleep(0.07)
        await assert_pool_recovers(pool)
    guard.check()
    assert outcomes["broken"] > 0, f"{outcomes}; {replay_hint()}"
    tally("workers killed at random points", sum(outcomes.values()))


@pytest.mark.parametrize("status", [0, 1, 7, 255])
async def test_a_worker_that_exits_abruptly_fails_only_its_call(
    request: pytest.FixtureRequest, status: int
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=2) as pool:
        async with create_task_group() as tg:
            # A neighbour's call on the other worker must not notice.
            tg.start_soon(pool.run_sync, funcs.sleep, 0.3)
            with pytest.raises(BrokenWorkerProcess) as caught:
                await pool.run_sync(funcs.exit_abruptly, status)
        assert caught.value.exit_code == status
        assert caught.value.signal is None
        # It says why: what the worker wrote to stderr last comes with the error.
        assert f"last words before exit {status}" in caught.value.stderr_tail
        assert f"last words before exit {status}" in str(caught.value)
        await assert_pool_recovers(pool, caught.value.pid)
        assert pool.statistics().broken == 1
    guard.check()
    tally("workers that exited abruptly")


async def test_cancelling_calls_while_their_worker_starts_leaves_nothing(
    request: pytest.FixtureRequest,
) -> None:
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    cancelled = 0
    count = scaled(12)
    # A third of the deadlines (2 ms) expire before any interpreter can have started and
    # answered the handshake; the others land anywhere from the spawn to the result.
    deadlines = [0.002 if n % 3 == 0 else rng.uniform(0, 0.08) for n in range(count)]
    for deadline in deadlines:
        async with WorkerPool(max_workers=1) as pool:
            with move_on_after(deadline) as scope:
                await pool.run_sync(funcs.pid, cancellable=rng.random() < 0.5)
            cancelled += scope.cancelled_caught
            await assert_pool_recovers(pool)
    guard.check()
    assert cancelled >= deadlines.count(0.002), replay_hint()
    tally("calls cancelled while their worker started", cancelled)


@pytest.mark.parametrize("stream", ["full", "closed", "none"])
async def test_a_full_or_closed_stdout_in_the_parent_does_not_break_calls(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, stream: str
) -> None:
    guard = LeakGuard(request.node.name)
    full = open("/dev/full", "w", encoding="utf-8")  # noqa: ASYNC230, SIM115 - never blocks; closed below
    if stream == "closed":
        full.close()
    monkeypatch.setattr(sys, "stdout", None if stream == "none" else full)
    monkeypatch.setattr(sys, "stderr", None if stream == "none" else full)
    try:
        async with WorkerPool(max_workers=1) as pool:
            pid = await pool.run_sync(funcs.pid)
            with fail_after(20):
                for _ in range(5):
                    assert await pool.run_sync(funcs.print_lots, 2000) == 2000
            assert await pool.run_sync(funcs.pid) == pid  # the same worker, unharmed
            assert pool.statistics().failures == 0
    finally:
        monkeypatch.undo()
        with suppress(OSError):  # what the failed forwarding left in its buffer
            full.close()
    guard.check()
    tally("calls with the parent's stdout full or closed", 5)


# -- the event loop ends ---------------------------------------------------------------


@pytest.mark.parametrize("ending", ["returns", "raises", "cancelled", "busy-shielded"])
def test_no_worker_outlives_the_event_loop(anyio_backend: Any, ending: str, tmp_path: Any) -> None:
    """``to_process`` workers, idle or busy, are gone once ``anyio.run`` returns."""
    backend, options = anyio_backend
    seen: set[int] = set()
    before_fds: dict[int, str] = {}

    async def main() -> None:
        async with create_task_group() as tg:
            for _ in range(3):
                tg.start_soon(to_process.run_sync, funcs.sleep, 0.0)
        if ending in ("raises", "cancelled"):
            async with create_task_group() as tg:
                for _ in range(3):
                    tg.start_soon(lambda: to_process.run_sync(funcs.sleep, 30, cancellable=True))
                await anyio.sleep(0.3)
                seen.update(p.pid for p in descendants())
                if ending == "raises":
                    raise KeyError("the application failed")
                tg.cancel_scope.cancel()  # cancellable calls: their workers are killed
        elif ending == "busy-shielded":
            # Shielded calls in tasks that main does not wait for: they are still
            # running, their workers busy, when main returns and the loop ends.
            busy = str(tmp_path / "busy")

            async def call_in_the_background() -> None:
                await to_process.run_sync(funcs.announce_then_sleep, busy, 5)

            for _ in range(2):
                spawn_loop_task(call_in_the_background)
            with fail_after(20):
                while len(list(tmp_path.glob("busy.*"))) < 2:  # noqa: ASYNC110 - files
                    await anyio.sleep(0.01)
            seen.update(p.pid for p in descendants())
        seen.update(p.pid for p in descendants())

    # uvloop opens a pipe of its own, once per process, in its first loop: let that
    # happen before the snapshot.
    anyio.run(anyio.sleep, 0, backend=backend, backend_options=options)
    children_before = {p.pid for p in descendants()}
    before_fds.update(open_fds())
    if ending == "raises":
        with pytest.raises(BaseException) as caught:
            anyio.run(main, backend=backend, backend_options=options)
        assert _contains(caught.value, KeyError), caught.value
    else:
        anyio.run(main, backend=backend, backend_options=options)
    workers = seen - children_before
    assert workers, "the test started no worker"
    # pid_exists() is true for a zombie too: an unreaped worker is a leak here.
    alive = [pid for pid in workers if pid_exists(pid)]
    assert not alive, f"workers outlived the event loop (or were not reaped): {alive}"
    leftover = [p.pid for p in descendants() if p.pid not in children_before]
    assert not leftover
    leaked = {fd: t for fd, t in open_fds().items() if before_fds.get(fd) != t}
    assert not leaked, f"descriptors left open after the loop: {leaked}"
    tally("event loops ended with workers", 1)
    tally("workers stopped by the end of their loop", len(workers))


def _contains(error: BaseException, kind: type[BaseException]) -> bool:
    inner: object = getattr(error, "exceptions", None)  # an exception group's members
    if isinstance(inner, tuple):
        return any(_contains(each, kind) for each in inner)
    return isinstance(error, kind)


async def test_a_failing_initializer_is_a_typed_error_and_leaves_nothing(
    request: pytest.FixtureRequest,
) -> None:
    guard = LeakGuard(request.node.name)
    async with WorkerPool(max_workers=2, initializer=funcs.boom, initargs=("no setup",)) as pool:
        for _ in range(3):
            with pytest.raises(BrokenWorkerProcess, match="initializer"):
                await pool.run_sync(funcs.pid)
        assert pool.statistics().workers == 0
    guard.check()
    tally("failing initializers contained", 3)


async def test_a_worker_dying_in_its_initializer_fails_one_call_only(
    request: pytest.FixtureRequest, tmp_path: Any
) -> None:
    guard = LeakGuard(request.node.name)
    marker = str(tmp_path / "died-once")
    async with WorkerPool(
        max_workers=1, initializer=funcs.die_on_first_use, initargs=(marker,)
    ) as pool:
        with pytest.raises(BrokenWorkerProcess) as caught:
            await pool.run_sync(funcs.pid)
        assert caught.value.exit_code == 5
        await assert_pool_recovers(pool, caught.value.pid)
    guard.check()
    tally("workers that died in their initializer")


async def test_workers_killed_while_the_pool_closes_leave_nothing(
    request: pytest.FixtureRequest,
) -> None:
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    pids: list[int] = []
    # Children this process had already (a tracker an earlier test's library left) are
    # none of the pool's, and must not be killed here.
    earlier = {p.pid for p in descendants(recursive=False)}
    async with WorkerPool(max_workers=4, prestart=4) as pool:
        async with create_task_group() as tg:
            for _ in range(4):
                tg.start_soon(lambda: pool.run_sync(funcs.sleep, 0.05))
        pids = sorted({p.pid for p in descendants(recursive=False)} - earlier)
        assert len(pids) == 4
        # Two idle workers die just as the pool closes: it must reap them with the rest.
        for pid in rng.sample(pids, 2):
            os.kill(pid, signal.SIGKILL)
    guard.check()
    tally("workers killed while their pool closed", 2)


# -- the parent dies ---------------------------------------------------------------------

PARENT_THAT_FORKS_AND_DIES = """
import multiprocessing
import os
import signal
import sys
import time

import anyio
from procio_workers import WorkerPool


if __name__ == "__mp_main__" and os.environ.get("MAIN_AHEAD_MARK"):
    # A prestarted worker runs this module as it starts: the parent dies meanwhile.
    time.sleep(1.0)
    with open(os.environ["MAIN_AHEAD_MARK"], "w") as file:
        file.write("done")


def linger(seconds):
    time.sleep(seconds)


def work_then_mark(path):
    # Runs while the parent dies; the mark shows it ran to its end.
    time.sleep(1.0)
    with open(path, "w") as file:
        file.write("done")
    return os.getpid()


def take_sigint_myself():
    signal.signal(signal.SIGINT, lambda signum, frame: None)
    return os.getpid()


async def main():
    if WATCH == "getppid":
        # Workers inherit this environment: without pidfd_open, they fall back to
        # checking their parent pid.
        os.environ["PYTHONPATH"] = os.path.dirname(os.path.abspath(__file__))
    if STATE == "main-ahead":
        os.environ["MAIN_AHEAD_MARK"] = sys.argv[1]
    async with WorkerPool(1, idle_poll=IDLE_POLL, prestart=int(STATE == "main-ahead")) as pool:
        if STATE == "main-ahead":
            # No call: it would wait for the main module. The one child is the worker.
            me = os.getpid()
            with open(f"/proc/{me}/task/{me}/children") as children:
                (worker,) = map(int, children.read().split())
        else:
            worker = await pool.run_sync(os.getpid)
        if STATE == "own-sigint":
            await pool.run_sync(take_sigint_myself)
        async with anyio.create_task_group() as tg:
            if STATE == "busy":
                tg.start_soon(pool.run_sync, work_then_mark, sys.argv[1])
                await anyio.sleep(0.3)  # the call is under way
            # A fork of this process holds the parent's ends of the worker's pipes: the
            # worker sees no end of file when this process dies.
            fork = multiprocessing.get_context("fork").Process(target=linger, args=(60,))
            fork.start()
            # Calls far apart: an idle worker sleeps in a read by now, not polling.
            await anyio.sleep(0.1)
            # Whether the worker holds a pidfd (of this process) to watch it through.
            links = []
            for fd in os.listdir(f"/proc/{worker}/fd"):
                try:
                    links.append(os.readlink(f"/proc/{worker}/fd/{fd}"))
                except FileNotFoundError:
                    pass  # closed meanwhile: the worker may be importing modules
            print(worker, fork.pid, int(any("pidfd" in link for link in links)), flush=True)
            if ENDING == "killed":
                os.kill(os.getpid(), signal.SIGKILL)
            os._exit(0)


if __name__ == "__main__":
    anyio.run(main, backend=BACKEND)
"""


def _first_line_of(command: list[str]) -> str:
    """Run *command* and return the first line it prints (the fork keeps its stdout
    open long after it exits, so reading to the end would wait for the fork)."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as process:
        assert process.stdout is not None
        line = process.stdout.readline()
        process.wait(timeout=30)
    return line


async def _parent_forks_and_dies(
    anyio_backend: Any, tmp_path: Any, *, ending: str, watch: str, state: str, idle_poll: object
) -> tuple[int, int, Any]:
    """Run a parent that forks and dies with its worker in *state*; see the script."""
    script = tmp_path / "parent.py"
    script.write_text(
        PARENT_THAT_FORKS_AND_DIES.replace("BACKEND", repr(anyio_backend[0]))
        .replace("ENDING", repr(ending))
        .replace("WATCH", repr(watch))
        .replace("STATE", repr(state))
        .replace("IDLE_POLL", repr(idle_poll)),
        encoding="utf-8",
    )
    (tmp_path / "sitecustomize.py").write_text("import os\ndel os.pidfd_open\n")
    mark = tmp_path / "mark"
    line = await anyio.to_thread.run_sync(_first_line_of, [sys.executable, str(script), str(mark)])
    worker, fork, has_pidfd = (int(number) for number in line.split())
    # The worker watched its parent the way this case means to test.
    assert has_pidfd == (watch == "pidfd")
    return worker, fork, mark


async def _wait_gone(worker: int, fork: int) -> None:
    try:
        with fail_after(10):
            while pid_alive(worker):  # noqa: ASYNC110 - not our child: no event to wait on
                await anyio.sleep(0.02)
        assert pid_alive(fork), "the fork that holds the pipes should still run"
    finally:
        for pid in (worker, fork):
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


LINUX_PIDFD = pytest.mark.skipif(
    sys.platform != "linux" or not hasattr(os, "pidfd_open"), reason="Linux with pidfd_open"
)


@LINUX_PIDFD
@pytest.mark.parametrize(
    ("ending", "watch"), [("exits", "pidfd"), ("killed", "pidfd"), ("killed", "getppid")]
)
# The default polls after the first call, then sleeps; 0 sleeps at once.
@pytest.mark.parametrize("idle_poll", ["adaptive", 0])
async def test_an_idle_worker_does_not_outlive_a_parent_that_forked(
    anyio_backend: Any, tmp_path: Any, ending: str, watch: str, idle_poll: object
) -> None:
    worker, fork, _ = await _parent_forks_and_dies(
        anyio_backend, tmp_path, ending=ending, watch=watch, state="idle", idle_poll=idle_poll
    )
    await _wait_gone(worker, fork)
    tally("workers that ended with their parent although a fork of it lived on")


@LINUX_PIDFD
@pytest.mark.parametrize("watch", ["pidfd", "getppid"])
@pytest.mark.parametrize(
    ("state", "idle_poll", "what"),
    [
        ("busy", "adaptive", "workers that finished their call, then ended with their parent"),
        (
            "main-ahead",
            0,
            "prestarted workers that ran the main module, then ended with their parent",
        ),
    ],
    ids=["call", "main-module"],
)
async def test_a_busy_worker_finishes_its_work_then_ends_with_a_parent_that_forked(
    anyio_backend: Any, tmp_path: Any, watch: str, state: str, idle_poll: object, what: str
) -> None:
    # The parent's exit is seen while the worker runs a call, or (prestarted) the
    # parent's main module ahead of any call: that work is not cut short, and the
    # worker ends once it is over.
    worker, fork, mark = await _parent_forks_and_dies(
        anyio_backend, tmp_path, ending="killed", watch=watch, state=state, idle_poll=idle_poll
    )
    await _wait_gone(worker, fork)
    assert mark.read_text() == "done", "the work under way should have run to its end"
    tally(what)


@LINUX_PIDFD
async def test_an_idle_worker_whose_function_took_sigint_still_ends_with_its_parent(
    anyio_backend: Any, tmp_path: Any
) -> None:
    # A handler of the function's own on SIGINT lets an interrupted read resume: the
    # worker must not then sleep on in it.
    worker, fork, _ = await _parent_forks_and_dies(
        anyio_backend, tmp_path, ending="killed", watch="pidfd", state="own-sigint", idle_poll=0
    )
    await _wait_gone(worker, fork)
    tally("workers with a SIGINT handler of their own that ended with their parent")
