"""Shared pytest configuration: every async test runs on asyncio, asyncio+uvloop and Trio."""

from __future__ import annotations

import sys
from typing import Any

import pytest


def _backend_params() -> list[Any]:
    params: list[Any] = [pytest.param(("asyncio", {}), id="asyncio")]
    if sys.platform != "win32":
        # uvloop is a hard requirement of the test environments off Windows: importing
        # it unconditionally means a missing install fails loudly instead of silently
        # dropping a third of the matrix.
        import uvloop

        params.append(
            pytest.param(("asyncio", {"loop_factory": uvloop.new_event_loop}), id="uvloop")
        )
    params.append(pytest.param(("trio", {}), id="trio"))
    return params


@pytest.fixture(params=_backend_params())
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param
