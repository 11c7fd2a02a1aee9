"""Protocol version negotiation: a version-1 worker still serves a version-2 parent.

The worker program is started with its wire module set to speak version 1 only, which is
what a worker written against the version-1 page sends: ``HELLO`` says 1, and any
``BATCH`` or ``STREAM`` would be a protocol error that ends it. A map then runs item by
item on plain ``CALL`` messages, and a stream is refused with a clear error.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from anyio import fail_after
from procio_process import open_process
from procio_workers import WorkerPool, _wire
from procio_workers._process_backend import BOOTSTRAP, WORKER_PROGRAM, ProcessWorker
from procio_workers.abc import Launcher

if TYPE_CHECKING:
    from tests.procio_workers_testfuncs import CustomError, echo, fail_deep, pid_and_echo
else:
    from procio_workers_testfuncs import CustomError, echo, fail_deep, pid_and_echo

pytestmark = pytest.mark.anyio

# Loads the wire module first, as the worker program would, and lowers the versions it
# speaks to 1 before the worker program reads them.
VERSION_1_BOOTSTRAP = """
import importlib.util as u, os, sys
wire_path = os.path.join(os.path.dirname(sys.argv[1]), "_wire.py")
spec = u.spec_from_file_location("_procio_wire", wire_path)
wire = u.module_from_spec(spec); sys.modules["_procio_wire"] = wire
spec.loader.exec_module(wire)
wire.PROTOCOL_VERSION = wire.MIN_PROTOCOL_VERSION = 1
spec = u.spec_from_file_location("_procio_worker", sys.argv[1])
worker = u.module_from_spec(spec); sys.modules["_procio_worker"] = worker
spec.loader.exec_module(worker)
sys.exit(worker.main(sys.argv[2:]))
"""


class VersionOneLauncher(Launcher):
    def command(self, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", VERSION_1_BOOTSTRAP, WORKER_PROGRAM, *argv[-2:]]


def squares_up_to(count: int) -> Any:
    yield from (n * n for n in range(count))


def protocols(pool: WorkerPool) -> list[int]:
    return sorted(
        slot.worker.protocol for slot in pool._slots if isinstance(slot.worker, ProcessWorker)
    )


async def test_a_version_2_worker_is_spoken_to_in_version_2() -> None:
    async with WorkerPool(max_workers=1) as pool:
        assert await pool.run_sync(echo, 1) == 1
        assert protocols(pool) == [2]


async def test_a_version_1_worker_runs_a_map_call_by_call() -> None:
    with fail_after(30):
        async with WorkerPool(max_workers=2, launcher=VersionOneLauncher()) as pool:
            results = [value async for value in pool.map(pid_and_echo, range(50))]
            assert [value for _, value in results] == list(range(50))
            assert protocols(pool) == [1] * len(pool._slots)
            # Every item was its own CALL: the pool counted 50 calls, and the workers
            # are still in service (a BATCH would have ended them with status 3).
            assert pool.statistics().calls == 50
            assert pool.statistics().broken == 0
            assert await pool.run_sync(echo, "after") == "after"


async def test_a_version_1_worker_reports_which_item_of_a_map_failed() -> None:
    async with WorkerPool(max_workers=1, launcher=VersionOneLauncher()) as pool:
        failing: Callable[[int], object] = fail_deep
        results = pool.map(failing, [3])
        with pytest.raises(CustomError) as caught:
            async for _ in results:
                pass
        assert results.failed_index == 0
        assert "raised by item 0 of the map" in getattr(caught.value, "__notes__", [])


async def test_a_version_1_worker_refuses_a_stream_and_stays_in_service() -> None:
    with fail_after(30):
        async with WorkerPool(max_workers=1, launcher=VersionOneLauncher()) as pool:
            first = await pool.run_sync(pid_and_echo, 0)
            with pytest.raises(TypeError, match="protocol version 1"):
                async for _ in pool.stream(squares_up_to, 3):
                    pass
            # Nothing was sent for the stream: the same worker takes the next call.
            assert await pool.run_sync(pid_and_echo, 1) == (first[0], 1)
            assert pool.statistics().broken == 0


async def test_the_worker_refuses_a_batch_after_agreeing_on_version_1() -> None:
    # A parent that agreed on version 1 must not send version-2 messages: the worker
    # treats one as a broken protocol.

    request_read, request_write = __import__("os").pipe()
    response_read, response_write = __import__("os").pipe()

    command = [
        sys.executable,
        "-c",
        BOOTSTRAP,
        WORKER_PROGRAM,
        str(request_read),
        str(response_write),
    ]
    async with await open_process(
        command, stdin=None, stdout=None, stderr=-1, pass_fds=(request_read, response_write)
    ) as process:
        import os

        os.close(request_read)
        os.close(response_write)
        reader = _wire.FrameReader()
        hello = _wire.read_frame_blocking(response_read, reader)
        assert hello is not None
        assert json.loads(bytes(hello.segments[0]))["protocols"] == [1, 2]
        init = {"protocol": 1, "sys_path": sys.path, "main": None, "codec": "pickle"}
        _wire.write_frame_blocking(request_write, _wire.INIT, [json.dumps(init).encode()])
        ready = _wire.read_frame_blocking(response_read, reader)
        assert ready is not None
        assert json.loads(bytes(ready.segments[0])) == {"ok": True}
        _wire.write_frame_blocking(request_write, _wire.BATCH, [b"not even read"])
        with fail_after(10):
            status = await process.wait()
        assert process.stderr is not None
        stderr = b"".join([chunk async for chunk in process.stderr])
        os.close(request_write)
        os.close(response_read)
        assert status == _wire.EXIT_PROTOCOL_ERROR
        assert b"unexpected BATCH" in stderr
