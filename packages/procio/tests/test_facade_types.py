"""mypy --strict sees the layers' types through the facade (assert_type), and they run."""

from __future__ import annotations

import subprocess
import sys

import procio
import pytest
from anyio.abc import ByteReceiveStream

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # typing.assert_type arrived in Python 3.11
    from typing_extensions import assert_type

pytestmark = pytest.mark.anyio


async def test_types_through_the_facade() -> None:
    result = await procio.run_process([sys.executable, "-c", "print('hi')"])
    assert_type(result, subprocess.CompletedProcess[bytes])
    assert result.stdout.strip() == b"hi"

    async with await procio.open_process([sys.executable, "-c", "print('a\\nb')"]) as process:
        assert_type(process, procio.Process)
        assert process.stdout is not None
        assert_type(process.stdout, ByteReceiveStream)
        lines = [line async for line in procio.LineReceiveStream(process.stdout)]
    assert_type(lines, list[str])
    assert lines == ["a", "b"]

    total = await procio.to_process.run_sync(sum, [1, 2, 3])
    assert_type(total, int)
    assert total == 6

    async with procio.WorkerPool(max_workers=1) as pool:
        power = await pool.run_sync(pow, 2, 10)
        assert_type(power, int)
        assert_type(pool.statistics(), procio.PoolStatistics)
    assert power == 1024
