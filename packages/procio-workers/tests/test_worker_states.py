"""The process worker's lifecycle: one state, moved only by the transitions it allows.

A worker taken to be ready while it still runs a call would hand that call's answer to
the next one; these tests drive real workers into the states where that could happen.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, ProcessBackend, WorkerPool
from procio_workers._process_backend import ProcessWorker
from procio_workers.abc import PENDING

if TYPE_CHECKING:
    from tests import procio_pool_testfuncs as pfuncs
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_pool_testfuncs as pfuncs
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio


def _ready(worker: ProcessWorker) -> bool:
    return worker.alive


async def _one_worker(backend: ProcessBackend) -> ProcessWorker:
    worker = await backend.start_worker({})
    assert isinstance(worker, ProcessWorker)
    return worker


async def test_a_worker_whose_call_was_interrupted_is_never_ready_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    guard = funcs.LeakGuard()
    backend = ProcessBackend()
    with anyio.fail_after(30):
        async with backend:
            worker = await _one_worker(backend)
            try:
                assert _ready(worker)
                request = backend.prepare_call(pfuncs.sleep_then_return, ("late", 0.3))
                assert worker.send_nowait(request)

                async def interrupted(self: ProcessWorker, *args: Any) -> Any:
                    raise KeyboardInterrupt

                with monkeypatch.context() as patch:
                    patch.setattr(ProcessWorker, "_receive", interrupted)
                    with pytest.raises(KeyboardInterrupt):
                        await worker.finish_call()
                # The call still runs in the worker: taking another now would get its
                # answer. Nor does the answer, once it has come, make the worker ready.
                assert not _ready(worker)
                await anyio.sleep(0.5)
                assert not _ready(worker)
                with pytest.raises(RuntimeError, match="busy"):
                    worker.send_nowait(backend.prepare_call(funcs.echo, ("next",)))
                assert not _ready(worker)
            finally:
                worker.kill()
                await worker.aclose()
            assert not _ready(worker)
    guard.check()


async def test_a_pool_never_hands_an_interrupted_worker_its_next_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An error that is no answer, raised while the answer is awaited, leaves the worker
    # busy: the pool must let it go rather than park it as ready.
    real_finish = ProcessWorker.finish_call
    armed = [True]

    async def finish_failing(self: ProcessWorker) -> object:
        if armed and armed.pop():
            raise OSError("the reply could not be awaited")
        return await real_finish(self)

    guard = funcs.LeakGuard()
    with anyio.fail_after(30):
        async with WorkerPool(max_workers=1, idle_poll=0) as pool:
            first = await pool.run_sync(funcs.sleep_and_pid, 0)
            monkeypatch.setattr(ProcessWorker, "finish_call", finish_failing)
            with pytest.raises(OSError, match="could not be awaited"):
                await pool.run_sync(pfuncs.sleep_then_return, "late", 0.3)
            # Each later call gets its own answer, from a worker that was not busy.
            assert await pool.run_sync(funcs.echo, "mine") == "mine"
            assert await pool.run_sync(funcs.sleep_and_pid, 0) != first
    guard.check()


async def test_a_killed_or_closed_worker_refuses_a_call_it_never_saw() -> None:
    guard = funcs.LeakGuard()
    backend = ProcessBackend()
    with anyio.fail_after(30):
        async with backend:
            worker = await _one_worker(backend)
            request = backend.prepare_call(funcs.echo, ("x",))
            try:
                worker.kill()
                assert not _ready(worker)
                with pytest.raises(BrokenWorkerProcess) as caught:
                    worker.send_nowait(request)
                assert not caught.value.started
            finally:
                await worker.aclose()
            await worker.aclose()  # twice is harmless
            with pytest.raises(BrokenWorkerProcess) as caught:
                await worker.call(request)
            assert not caught.value.started
            assert worker._channel.request.fd == worker._channel.response.fd == -1
    guard.check()


async def test_the_answer_of_a_call_makes_the_worker_ready_only_once_it_is_read() -> None:
    backend = ProcessBackend(idle_poll=0)
    with anyio.fail_after(30):
        async with backend:
            worker = await _one_worker(backend)
            try:
                request = backend.prepare_call(pfuncs.sleep_then_return, ("done", 0.2))
                worker.send_nowait(request)
                assert worker.reply_nowait() is PENDING
                assert not _ready(worker)
                # A batch may not start on it either.
                batch = backend.prepare_batch(funcs.echo, [(1,), (2,)])
                with pytest.raises(RuntimeError, match="busy"):
                    await worker.call_batch(batch)
                assert await worker.finish_call() == "done"
                assert _ready(worker)
                assert await worker.call_batch(batch) == [1, 2]
                assert _ready(worker)
            finally:
                await worker.aclose()
