"""Shared pytest configuration: every async test runs on asyncio, asyncio+uvloop and Trio.

``PROCIO_TEST_BACKENDS`` (a comma-separated subset of ``asyncio,uvloop,trio``) narrows
the matrix: continuous integration runs the whole matrix once, and the checks that are
about something else (each layer installed alone, the oldest accepted anyio) on fewer
event loops.
"""

from __future__ import annotations

import os
import random
import sys
from typing import Any

import pytest

_BACKENDS = ("asyncio", "uvloop", "trio")


# One seed of the reliability suite for the whole run, drawn as this file is imported:
# pytest imports it before any conftest.py below it (the reliability suite's reads the
# seed as it loads). `hatch test` runs the tests in several processes (pytest-xdist),
# which inherit this process's environment: each draws its scenarios from the same
# seed, and the header below names it.
if not os.environ.get("PROCIO_RELIABILITY_SEED"):
    os.environ["PROCIO_RELIABILITY_SEED"] = str(random.SystemRandom().randrange(2**32))


def pytest_report_header(config: pytest.Config) -> str:
    seed = os.environ["PROCIO_RELIABILITY_SEED"]
    scale = os.environ.get("PROCIO_RELIABILITY_SCALE") or "1"
    replay = f"replay with PROCIO_RELIABILITY_SEED={seed}"
    return f"procio reliability: seed {seed} ({replay}), scale {scale}"


def _chosen_backends() -> set[str]:
    wanted = {name.strip() for name in os.environ.get("PROCIO_TEST_BACKENDS", "").split(",")}
    wanted.discard("")
    unknown = wanted.difference(_BACKENDS)
    if unknown:
        raise pytest.UsageError(
            f"PROCIO_TEST_BACKENDS names unknown event loops {sorted(unknown)}; "
            f"choose from {', '.join(_BACKENDS)}"
        )
    return wanted or set(_BACKENDS)


def _backend_params() -> list[Any]:
    chosen = _chosen_backends()
    return [param for param in _all_backend_params() if param.id in chosen]


def _all_backend_params() -> list[Any]:
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
