"""The fast path of the Worker contract, as any backend may implement it.

A worker that takes calls over in ``send_nowait`` has them completed by ``reply_nowait``
and, when that is not ready, ``finish_call``: never by ``call``. One that does not still
runs every call through ``call``. A worker reports a call that never reached it with
``BrokenWorkerProcess(..., started=False)``, and the pool runs the call elsewhere.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from typing import Any

import anyio
import pytest
from procio_workers import BrokenWorkerProcess, WorkerPool
from procio_workers.abc import PENDING, Worker, WorkerBackend


class _Recorder(Worker):
    """Runs calls in this process and records which methods of the contract ran."""

    def __init__(self, backend: _Backend) -> None:
        self.backend = backend
        self.events: list[str] = []
        self.killed = False

    @property
    def alive(self) -> bool:
        return not self.killed

    async def call(self, request: Any) -> object:
        self.events.append("call")
        func, args = request
        await anyio.lowlevel.checkpoint()
        return func(*args)

    def kill(self) -> None:
        self.events.append("kill")
        self.killed = True

    async def aclose(self) -> None:
        self.killed = True


class _FastRecorder(_Recorder):
    """Implements the fast path: the result is ready at once unless told otherwise."""

    def __init__(self, backend: _Backend) -> None:
        super().__init__(backend)
        self._request: Any = None

    def send_nowait(self, request: Any) -> bool:
        self.events.append("send_nowait")
        if self.backend.unreached:
            self.backend.unreached -= 1
            raise BrokenWorkerProcess("it had exited while idle", started=False)
        self._request = request
        return True

    def reply_nowait(self) -> object:
        self.events.append("reply_nowait")
        if self.backend.slow:
            return PENDING
        func, args = self._request
        return func(*args)

    async def finish_call(self) -> object:
        self.events.append("finish_call")
        if self.backend.hang:
            await anyio.sleep_forever()
        func, args = self._request
        return func(*args)


class _Backend(WorkerBackend):
    def __init__(self, worker_class: type[_Recorder]) -> None:
        self.worker_class = worker_class
        self.workers: list[_Recorder] = []
        self.slow = False
        self.hang = False
        self.unreached = 0

    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        worker = self.worker_class(self)
        self.workers.append(worker)
        return worker


def _fail(message: str) -> None:
    raise ValueError(message)


@pytest.mark.anyio
async def test_a_third_party_fast_path_is_used_for_every_call() -> None:
    backend = _Backend(_FastRecorder)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        assert await pool.run_sync(divmod, 7, 2) == (3, 1)
        backend.slow = True
        assert await pool.run_sync(divmod, 9, 4) == (2, 1)
    (worker,) = backend.workers
    assert worker.events == [
        "send_nowait",
        "reply_nowait",
        "send_nowait",
        "reply_nowait",
        "finish_call",
    ]


@pytest.mark.anyio
async def test_an_error_from_the_fast_path_is_the_calls_and_the_worker_stays() -> None:
    backend = _Backend(_FastRecorder)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        with pytest.raises(ValueError, match="from reply_nowait"):
            await pool.run_sync(_fail, "from reply_nowait")
        backend.slow = True
        with pytest.raises(ValueError, match="from finish_call"):
            await pool.run_sync(_fail, "from finish_call")
        assert await pool.run_sync(abs, -5) == 5
        assert pool.statistics().workers == 1
    assert len(backend.workers) == 1
    assert "kill" not in backend.workers[0].events


@pytest.mark.anyio
async def test_a_worker_without_the_fast_path_runs_every_call_through_call() -> None:
    backend = _Backend(_Recorder)
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        assert await pool.run_sync(divmod, 7, 2) == (3, 1)
        assert await pool.run_sync(abs, -3) == 3
    (worker,) = backend.workers
    assert worker.events == ["call", "call"]


@pytest.mark.anyio
async def test_a_call_that_never_reached_its_worker_runs_on_another() -> None:
    backend = _Backend(_FastRecorder)
    async with WorkerPool(max_workers=2, backend=backend) as pool:
        backend.unreached = 1
        assert await pool.run_sync(abs, -4) == 4
        figures = pool.statistics()
    first, second = backend.workers
    assert first.events == ["send_nowait"]
    assert second.events == ["send_nowait", "reply_nowait"]
    # Not a worker lost during a call: the call had not reached it.
    assert (figures.calls, figures.failures, figures.broken) == (1, 0, 0)


@pytest.mark.anyio
async def test_a_cancellable_call_in_finish_call_kills_its_worker() -> None:
    backend = _Backend(_FastRecorder)
    backend.slow = backend.hang = True
    async with WorkerPool(max_workers=1, backend=backend) as pool:
        with anyio.move_on_after(0.2) as scope:
            await pool.run_sync(abs, -1, cancellable=True)
        assert scope.cancelled_caught
    (worker,) = backend.workers
    assert worker.events == ["send_nowait", "reply_nowait", "finish_call", "kill"]


def test_the_not_started_outcome_is_a_constructor_argument_and_survives_pickling() -> None:
    unreached = BrokenWorkerProcess("gone while idle", pid=12, started=False)
    assert unreached.started is False
    assert BrokenWorkerProcess("lost").started is True
    copy = pickle.loads(pickle.dumps(unreached))
    assert (copy.started, copy.pid, copy.reason) == (False, 12, "gone while idle")


def test_the_default_fast_path_declines_every_call() -> None:
    worker = _Recorder(_Backend(_Recorder))
    assert worker.send_nowait((abs, (-1,))) is False
    assert worker.reply_nowait() is PENDING
    assert repr(PENDING) == "procio_workers.abc.PENDING"
