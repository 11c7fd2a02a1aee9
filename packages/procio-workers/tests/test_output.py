"""A worker's stdout and stderr reach the parent, never the protocol, whatever the size."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import WorkerPool

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

pytestmark = pytest.mark.anyio


async def test_prints_and_raw_writes_reach_the_handler_before_the_call_returns() -> None:
    received: dict[int, bytearray] = {1: bytearray(), 2: bytearray()}

    def handler(which: int, data: bytes) -> None:
        received[which] += data

    async with WorkerPool(max_workers=1, output=handler) as pool:
        await pool.run_sync(funcs.print_things, "hello from the worker")
        assert b"hello from the worker\n" in received[1]
        assert b"raw stdout\n" in received[1]
        assert b"raw stderr\n" in received[2]
        assert b"to stderr\n" in received[2]


async def test_a_huge_print_neither_hangs_nor_corrupts_the_protocol() -> None:
    size = 8 * 1024 * 1024
    received = bytearray()

    def handler(which: int, data: bytes) -> None:
        if which == 1:
            received.extend(data)

    async with WorkerPool(max_workers=1, output=handler) as pool:
        with anyio.fail_after(30):
            pid = await pool.run_sync(funcs.print_things, "start", size)
            assert await pool.run_sync(funcs.echo, "intact") == "intact"
    assert isinstance(pid, int)
    assert received.count(b"x") == size


async def test_output_goes_to_the_parents_stdout_and_stderr_by_default(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with WorkerPool(max_workers=1) as pool:
        await pool.run_sync(funcs.print_things, "default route")
    captured = capsys.readouterr()
    assert "default route\n" in captured.out
    assert "raw stdout\n" in captured.out
    assert "raw stderr\n" in captured.err
