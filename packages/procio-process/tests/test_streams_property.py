"""Whatever the chunking on either side, the bytes through a child arrive intact."""

from __future__ import annotations

import random

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procio_process import open_process

pytestmark = pytest.mark.anyio


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    # Sizes up to several times a pipe's capacity, so sends and receives must wait.
    sizes=st.lists(st.integers(min_value=0, max_value=200_000), max_size=5),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
    # From 16 bytes up: 1-byte reads of a megabyte would only make the test slow.
    read_sizes=st.lists(st.integers(min_value=16, max_value=100_000), min_size=1, max_size=8),
)
async def test_cat_echoes_any_chunking(sizes: list[int], seed: int, read_sizes: list[int]) -> None:
    rng = random.Random(seed)
    chunks = [rng.randbytes(size) for size in sizes]
    received: list[bytes] = []
    async with await open_process(["cat"]) as process:
        stdin, stdout = process.stdin, process.stdout
        assert stdin is not None
        assert stdout is not None

        async def feed() -> None:
            for chunk in chunks:
                await stdin.send(chunk)
            await stdin.aclose()

        async with anyio.create_task_group() as tg:
            tg.start_soon(feed)
            index = 0
            while True:
                size = read_sizes[index % len(read_sizes)]
                index += 1
                try:
                    data = await stdout.receive(size)
                except anyio.EndOfStream:
                    break
                assert 0 < len(data) <= size
                received.append(data)
    assert b"".join(received) == b"".join(chunks)
    assert process.returncode == 0
