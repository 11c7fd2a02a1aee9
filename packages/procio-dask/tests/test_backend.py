"""DaskBackend against a real LocalCluster: results, errors, worker loss, cancellation."""

# distributed leaves Client, LocalCluster and several of their methods unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import hashlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import anyio
import psutil
import pytest
from distributed import Client
from procio_dask import DaskBackend
from procio_workers import (
    BrokenWorkerProcess,
    RemoteTraceback,
    SerializationError,
    WorkerError,
    WorkerPool,
)
from procio_workers.testing import check_backend

pytestmark = pytest.mark.anyio


def _functions_for_the_cluster() -> SimpleNamespace:
    """The functions the tests run on the cluster.

    The Dask workers cannot import this test module by name (pytest imports it from its
    path), so the functions are nested: Dask then sends them by value, as it sends a
    lambda.
    """

    def fail_deep(value: int) -> int:
        return inner_failure(value)

    def inner_failure(value: int) -> int:
        raise ValueError(f"no good: {value}")

    def exit_worker_thread() -> None:
        raise SystemExit(7)

    def kill_own_process() -> None:
        os.kill(os.getpid(), signal.SIGKILL)

    def sleep_then_touch(seconds: float, started: str, finished: str) -> None:
        Path(started).touch()
        time.sleep(seconds)
        Path(finished).touch()

    def touch(path: str) -> None:
        Path(path).touch()

    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def refuse_to_load() -> None:
        raise RuntimeError("this object cannot be rebuilt here")

    class Unloadable:
        """Pickles anywhere; unpickling it (in the next process) raises."""

        def __reduce__(self) -> tuple[object, ...]:
            return (refuse_to_load, ())

    class UnloadableError(Exception):
        """Travels from the Dask worker, but the parent cannot rebuild it."""

        def __reduce__(self) -> tuple[object, ...]:
            return (refuse_to_load, ())

    def return_unloadable() -> object:
        return Unloadable()

    def raise_unloadable() -> None:
        raise UnloadableError("made on the worker")

    def raise_with_a_lock() -> None:
        error = ValueError("holds a lock")
        error.lock = threading.Lock()  # type: ignore[attr-defined]  # makes it unpicklable
        raise error

    return SimpleNamespace(**locals())


remote = _functions_for_the_cluster()


# -- helpers ----------------------------------------------------------------------------


async def eventually(check: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll *check* until it holds or *timeout* seconds pass; return its last answer."""
    with anyio.move_on_after(timeout):
        # What is polled (files, the scheduler's state) has no event to wait on.
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.02)
    return check()


def scheduler_tasks(client: Client) -> int:
    """How many tasks the scheduler still tracks, for every client."""
    count: int = client.run_on_scheduler(_count_tasks)
    return count


def _count_tasks(dask_scheduler: object) -> int:
    return len(dask_scheduler.tasks)  # type: ignore[attr-defined]


def worker_pids(client: Client) -> set[int]:
    pids: dict[str, int] = client.run(os.getpid)
    return set(pids.values())


# -- the conformance kit ------------------------------------------------------------------


async def test_passes_the_procio_workers_conformance_kit(address: str) -> None:
    await check_backend(lambda: DaskBackend(address), workers=2)


# -- calls --------------------------------------------------------------------------------


async def test_calls_run_in_the_clusters_worker_processes(address: str, client: Client) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        pid = await pool.run_sync(os.getpid)
    assert pid != os.getpid()
    assert pid in worker_pids(client)


async def test_every_call_runs_even_with_the_same_arguments(address: str) -> None:
    # With pure=True, Dask would give concurrent identical calls one shared result.
    results: list[bytes] = []

    async def one(pool: WorkerPool) -> None:
        results.append(await pool.run_sync(os.urandom, 16))

    async with (
        WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool,
        anyio.create_task_group() as tg,
    ):
        for _ in range(4):
            tg.start_soon(one, pool)
    assert len(set(results)) == 4


async def test_the_functions_traceback_comes_back_with_its_exception(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(ValueError, match="no good: 3") as caught:
            await pool.run_sync(remote.fail_deep, 3)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    # The functions travelled by value, so the worker knows their lines but not their
    # source text.
    raising_line = remote.inner_failure.__code__.co_firstlineno + 1
    assert "in fail_deep" in cause.traceback
    assert f"line {raising_line}, in inner_failure" in cause.traceback
    assert cause.traceback.rstrip().endswith("ValueError: no good: 3")
    # Only the function's frames: neither Dask's machinery nor procio_dask's wrapper.
    assert "distributed" not in cause.traceback
    assert "procio_dask" not in cause.traceback


async def test_system_exit_in_the_function_spares_the_dask_worker(
    address: str, client: Client
) -> None:
    workers_before = set(client.scheduler_info()["workers"])
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(remote.exit_worker_thread)
        assert caught.value.type_name == "builtins.SystemExit"
        assert caught.value.message == "7"
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "exit_worker_thread" in caught.value.traceback
        assert await pool.run_sync(abs, -4) == 4
    # A restarted worker would come back under a new address.
    assert set(client.scheduler_info()["workers"]) == workers_before


async def test_an_unpicklable_argument_is_a_serialization_error(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(SerializationError):
            await pool.run_sync(id, threading.Lock())
        assert await pool.run_sync(abs, -1) == 1
        assert pool.statistics().broken == 0


async def test_an_unpicklable_argument_fails_before_anything_reaches_dask(
    address: str, client: Client
) -> None:
    assert await eventually(lambda: scheduler_tasks(client) == 0)
    # The large buffer would be scattered ahead of the call: it must not be either.
    big = os.urandom(2 << 20)
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(SerializationError, match="lock"):
            await pool.run_sync(remote.digest, big, threading.Lock())
        assert scheduler_tasks(client) == 0
        assert pool.statistics().started == 0


async def test_an_argument_the_dask_worker_cannot_rebuild_is_a_serialization_error(
    address: str,
) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(SerializationError, match="rebuilt") as caught:
            await pool.run_sync(repr, remote.Unloadable())
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "cannot be rebuilt here" in caught.value.__cause__.traceback
        assert await pool.run_sync(abs, -1) == 1
        assert pool.statistics().broken == 0


async def test_an_unpicklable_result_is_a_serialization_error(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(SerializationError, match="result"):
            await pool.run_sync(threading.Lock)
        assert await pool.run_sync(abs, -1) == 1
        assert pool.statistics().broken == 0


async def test_a_result_the_caller_cannot_rebuild_is_a_serialization_error(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(SerializationError, match="result") as caught:
            await pool.run_sync(remote.return_unloadable)
        assert "cannot be rebuilt here" in repr(caught.value.__cause__)
        assert await pool.run_sync(abs, -1) == 1


async def test_an_exception_that_cannot_travel_is_a_worker_error(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(remote.raise_with_a_lock)
        assert caught.value.type_name == "builtins.ValueError"
        assert caught.value.message == "holds a lock"
        assert caught.value.exception is None
        assert isinstance(caught.value.__cause__, RemoteTraceback)
        assert "in raise_with_a_lock" in caught.value.traceback
        assert await pool.run_sync(abs, -1) == 1
        assert pool.statistics().broken == 0


async def test_an_exception_the_caller_cannot_rebuild_is_a_worker_error(address: str) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with pytest.raises(WorkerError) as caught:
            await pool.run_sync(remote.raise_unloadable)
        assert caught.value.type_name.endswith("UnloadableError")
        assert caught.value.message == "made on the worker"
        assert caught.value.exception is None
        assert "in raise_unloadable" in caught.value.traceback
        assert await pool.run_sync(abs, -1) == 1


async def test_a_dead_dask_worker_fails_only_its_call(address: str, client: Client) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        with pytest.raises(BrokenWorkerProcess, match="Dask worker died"):
            await pool.run_sync(remote.kill_own_process)
        assert pool.statistics().broken == 1
        assert await pool.run_sync(abs, -2) == 2
    # The nanny restarts the killed worker; later tests expect two workers.
    await anyio.to_thread.run_sync(lambda: client.wait_for_workers(2, timeout=30))


# -- large arguments ------------------------------------------------------------------------


async def test_a_large_buffer_travels_scattered(address: str, client: Client) -> None:
    # 12 MiB is over Dask's 10 MB "large graph" warning, which is an error here: the
    # argument must go ahead of the task, not inside it.
    data = os.urandom(12 << 20)
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        assert await pool.run_sync(remote.digest, data) == hashlib.sha256(data).hexdigest()
        echoed = await pool.run_sync(bytes, data)
        assert echoed == data
    assert await eventually(lambda: scheduler_tasks(client) == 0)


async def test_scatter_threshold_sends_small_buffers_inline(address: str) -> None:
    backend = DaskBackend(address, scatter_threshold=0)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        assert await pool.run_sync(remote.digest, b"abc") == hashlib.sha256(b"abc").hexdigest()


# -- cancellation ---------------------------------------------------------------------------


async def test_a_cancelled_running_call_returns_at_once_and_runs_to_its_end(
    address: str, tmp_path: Path
) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with anyio.CancelScope() as scope:
            async with anyio.create_task_group() as tg:

                async def call() -> None:
                    await pool.run_sync(
                        remote.sleep_then_touch, 1.0, str(started), str(finished), cancellable=True
                    )

                tg.start_soon(call)
                assert await eventually(started.exists)
                scope.cancel()
        assert scope.cancelled_caught
        # The caller is free before the function ends: Dask cannot stop a running task.
        assert not finished.exists()
        assert await eventually(finished.exists)
        assert pool.statistics().broken == 0


async def test_a_cancelled_queued_call_never_runs(
    address: str, client: Client, tmp_path: Path
) -> None:
    # Both single-threaded Dask workers are busy for a second, so the call waits in the
    # scheduler's queue when it is cancelled.
    blockers = [
        client.submit(
            remote.sleep_then_touch,
            1.0,
            str(tmp_path / f"blocking-{index}"),
            str(tmp_path / f"unblocked-{index}"),
            pure=False,
        )
        for index in range(2)
    ]
    # Only once both run is the cluster full: a call submitted before could run at once.
    assert await eventually(
        lambda: all((tmp_path / f"blocking-{index}").exists() for index in range(2))
    )
    marker = tmp_path / "ran"
    async with WorkerPool(max_workers=1, backend=DaskBackend(address)) as pool:
        with anyio.move_on_after(0.3):
            await pool.run_sync(remote.touch, str(marker), cancellable=True)
        await anyio.to_thread.run_sync(client.gather, blockers)
        for blocker in blockers:
            blocker.release()
        await anyio.sleep(0.5)
        assert not marker.exists()
        assert await pool.run_sync(abs, -3) == 3


async def test_a_worker_killed_under_its_call_fails_that_call_at_once(
    client: Client, tmp_path: Path
) -> None:
    started, finished = tmp_path / "started", tmp_path / "finished"
    async with DaskBackend(client) as backend:
        worker = await backend.start_worker({})
        request = backend.prepare_call(remote.sleep_then_touch, (1.0, str(started), str(finished)))
        async with anyio.create_task_group() as tg:

            async def call() -> None:
                with pytest.raises(BrokenWorkerProcess, match="killed"):
                    await worker.call(request)

            tg.start_soon(call)
            assert await eventually(started.exists)
            worker.kill()
        # The caller was woken before the function ended on its Dask worker.
        assert not finished.exists()
        assert not worker.alive
        await worker.aclose()
    assert await eventually(finished.exists)


async def test_leaving_the_pool_leaves_nothing_on_the_cluster(address: str, client: Client) -> None:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        for value in range(5):
            assert await pool.run_sync(abs, -value) == value
        with pytest.raises(ValueError):
            await pool.run_sync(remote.fail_deep, 1)
    assert await eventually(lambda: scheduler_tasks(client) == 0)


# -- the client -------------------------------------------------------------------------------


async def test_a_client_opened_from_an_address_is_closed_on_exit(address: str) -> None:
    backend = DaskBackend(address)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        await pool.run_sync(abs, 1)
        assert backend.client.status == "running"
    assert backend.client.status == "closed"


async def test_a_client_passed_in_stays_open(client: Client) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(client)) as pool:
        assert await pool.run_sync(abs, -5) == 5
    assert client.status == "running"


async def test_calls_through_a_closed_client_fail_as_broken_workers(address: str) -> None:
    own = await anyio.to_thread.run_sync(lambda: Client(address, set_as_default=False))
    async with WorkerPool(max_workers=1, backend=DaskBackend(own)) as pool:
        assert await pool.run_sync(abs, -1) == 1
        await anyio.to_thread.run_sync(own.close)
        with pytest.raises(BrokenWorkerProcess, match="client is closed"):
            await pool.run_sync(abs, -1)


async def test_cluster_threads_counts_the_workers_threads(client: Client) -> None:
    async with DaskBackend(client) as backend:
        assert await backend.cluster_threads() == 2


async def test_submit_options_reach_every_submission(client: Client) -> None:
    pids: dict[str, int] = client.run(os.getpid)
    chosen = sorted(pids)[0]
    backend = DaskBackend(client, submit_options={"workers": [chosen]})
    async with WorkerPool(max_workers=2, backend=backend) as pool:
        seen = {await pool.run_sync(os.getpid) for _ in range(6)}
    assert seen == {pids[chosen]}


async def test_a_call_of_something_not_callable_fails_before_reaching_dask(
    client: Client,
) -> None:
    async with WorkerPool(max_workers=1, backend=DaskBackend(client)) as pool:
        with pytest.raises(TypeError, match="not callable"):
            await pool.run_sync(42, 1)  # type: ignore[arg-type]  # the mistake under test
        assert pool.statistics().started == 0


async def test_process_options_are_refused(client: Client) -> None:
    async with DaskBackend(client) as backend:
        with pytest.raises(TypeError, match="env"):
            await backend.start_worker({"env": {}})


def test_reserved_submit_options_are_refused(client: Client) -> None:
    with pytest.raises(TypeError, match="pure"):
        DaskBackend(client, submit_options={"pure": True})


def test_client_options_need_an_address(client: Client) -> None:
    with pytest.raises(TypeError, match="client_options"):
        DaskBackend(client, client_options={"timeout": 5})


async def test_an_asynchronous_client_is_refused(address: str, anyio_backend_name: str) -> None:
    if anyio_backend_name != "asyncio":
        pytest.skip("an asynchronous Dask client runs only on an asyncio event loop")
    async with Client(address, asynchronous=True, set_as_default=False) as async_client:
        with pytest.raises(TypeError, match="synchronous"):
            DaskBackend(async_client)


# -- leaks ------------------------------------------------------------------------------------


def connections_to(address: str) -> set[tuple[str, int]]:
    """This process's open TCP connections to *address* (``tcp://host:port``), by local end."""
    port = int(address.rsplit(":", 1)[1])
    return {
        (conn.laddr.ip, conn.laddr.port)
        for conn in psutil.Process().net_connections(kind="tcp")
        # A listening socket's remote address is an empty tuple, which has no port.
        if getattr(conn.raddr, "port", None) == port and conn.status == psutil.CONN_ESTABLISHED
    }


def lasting_threads() -> set[int | None]:
    """Threads other than the idle workers AnyIO and Trio keep for a while on purpose."""
    cached = ("AnyIO worker thread", "Trio thread")
    return {t.ident for t in threading.enumerate() if not t.name.startswith(cached)}


async def test_a_pool_that_opened_its_client_leaves_no_connection_or_thread_behind(
    address: str,
) -> None:
    async def use_a_pool() -> None:
        async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
            assert await pool.run_sync(abs, -1) == 1
            with anyio.move_on_after(0.05):
                await pool.run_sync(time.sleep, 0.5, cancellable=True)

    # The first pool warms up what Dask keeps for the whole process (its callback and
    # offload threads); only the second one is measured. The scheduler runs in this
    # process too, so its sockets come and go: only connections *to* it are counted.
    await use_a_pool()
    connections, threads = connections_to(address), lasting_threads()
    await use_a_pool()
    assert await eventually(lambda: connections_to(address) <= connections)
    assert await eventually(lambda: lasting_threads() <= threads)
