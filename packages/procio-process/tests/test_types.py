"""The public surface as the type checker sees it (checked by mypy, run by pytest)."""

from __future__ import annotations

import subprocess
import sys

import anyio.abc
import pytest
from procio_process import CancelPolicy, Process, open_process, run_process

if sys.version_info >= (3, 11):
    from typing import assert_type
else:  # typing_extensions is a dependency below 3.13
    from typing_extensions import assert_type

pytestmark = pytest.mark.anyio


async def test_public_types() -> None:
    result = await run_process(["true"])
    assert_type(result, subprocess.CompletedProcess[bytes])
    process = await open_process(["true"])
    async with process:
        assert_type(process, Process)
        assert_type(process.pid, int)
        assert_type(process.returncode, int | None)
        assert_type(process.stdin, anyio.abc.ByteSendStream | None)
        assert_type(process.stdout, anyio.abc.ByteReceiveStream | None)
        assert_type(process.stderr, anyio.abc.ByteReceiveStream | None)
        assert_type(await process.wait(), int)
        assert_type(await process.stop(CancelPolicy.kill()), int)
        assert_type(process.cancel_policy, CancelPolicy)
    assert_type(CancelPolicy(grace_period=1.5).grace_period, float)
