"""A worker's stdout and stderr reach the parent, never the protocol, whatever the size."""

from __future__ import annotations

import logging
import os
import sys
import threading
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


async def test_an_output_handler_that_raises_is_logged_and_the_call_succeeds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def handler(which: int, data: bytes) -> None:
        raise ValueError(f"handler broke on fd {which}")

    with caplog.at_level(logging.ERROR, logger="procio.workers"):
        async with WorkerPool(max_workers=1, output=handler) as pool:
            assert isinstance(await pool.run_sync(funcs.print_things, "lost?"), int)
            assert await pool.run_sync(funcs.echo, "next") == "next"
    reports = [r for r in caplog.records if r.name == "procio.workers"]
    assert reports, "the handler's exception vanished"
    assert all(r.levelno == logging.ERROR for r in reports)
    assert {str(r.exc_info[1]) for r in reports if r.exc_info} <= {
        "handler broke on fd 1",
        "handler broke on fd 2",
    }
    assert any(r.exc_info and isinstance(r.exc_info[1], ValueError) for r in reports)


def _expected_lines(size: int) -> bytes:
    chunks = []
    written = 0
    line = 0
    while written < size:
        text = f"{line:09d}\n".encode()
        chunks.append(text)
        written += len(text)
        line += 1
    return b"".join(chunks)


@pytest.mark.skipif(sys.platform == "win32", reason="workers are POSIX processes")
async def test_a_parent_stdout_nobody_reads_stalls_the_worker_not_the_event_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    size = 4 << 20  # far more than the pipes and the forwarding buffer together hold
    expected = _expected_lines(size)
    read_end, write_end = os.pipe()
    stdout = open(write_end, "w", encoding="utf-8")  # noqa: ASYNC230, SIM115 - closed below
    monkeypatch.setattr(sys, "stdout", stdout)
    ticks = 0
    results: list[int] = []

    async def tick() -> None:
        nonlocal ticks
        while True:
            await anyio.sleep(0.005)
            ticks += 1

    async def call(pool: WorkerPool) -> None:
        results.append(await pool.run_sync(funcs.print_bytes, size))

    go = threading.Event()
    forced: list[bool] = []
    received = bytearray()

    def drain() -> None:
        # Reads once the sibling task has had its turns; if it never gets them (the
        # event loop is stuck in a write to the full pipe), reads anyway after a long
        # while, so that the test fails instead of hanging.
        forced.append(not go.wait(10))
        while len(received) < len(expected):
            chunk = os.read(read_end, 1 << 16)
            if not chunk:
                break
            received.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        with anyio.fail_after(40):
            async with WorkerPool(max_workers=1) as pool, anyio.create_task_group() as tg:
                tg.start_soon(tick)
                tg.start_soon(call, pool)
                # Nobody reads the parent's stdout for a while: the sibling task runs on.
                while ticks < 40:  # noqa: ASYNC110 - counting the other task's turns
                    await anyio.sleep(0.005)
                # The worker waits for room, as print() in the parent would: its call
                # cannot have finished, though nothing of its output is lost.
                assert not results
                go.set()
                while not results:  # noqa: ASYNC110 - the call ends once drained
                    await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
        await anyio.to_thread.run_sync(reader.join)
        assert forced == [False], "the event loop stalled while nobody read the parent's stdout"
        assert results == [len(expected)]
        assert bytes(received) == expected
    finally:
        monkeypatch.undo()
        go.set()
        stdout.close()
        os.close(read_end)
