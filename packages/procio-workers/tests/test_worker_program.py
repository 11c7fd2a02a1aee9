"""What the worker program tells its parent: codecs in HELLO, tracebacks, messages."""

from __future__ import annotations

import json
import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import ProcessBackend, RemoteTraceback, WorkerPool, _wire
from procio_workers._process_backend import BOOTSTRAP, WORKER_PROGRAM
from procio_workers.testing import _session

if TYPE_CHECKING:
    from tests import procio_polling_testfuncs as pfuncs
else:
    import procio_polling_testfuncs as pfuncs

# Starts procio's worker program where no installed package can be imported (the
# standard library only): cloudpickle is then missing, as on a bare interpreter.
_NO_SITE_PACKAGES = (
    "import sys;"
    "sys.path[:] = [p for p in sys.path if 'site-packages' not in p and 'dist-packages' not in p];"
    + BOOTSTRAP
)


def _hello(command: list[str]) -> dict[str, object]:
    with _session(command, 10.0) as session:
        hello = json.loads(bytes(session.expect(_wire.HELLO).segments[0]))
        session.close()
    assert isinstance(hello, dict)
    return hello


def test_hello_offers_cloudpickle_where_it_is_installed() -> None:
    pytest.importorskip("cloudpickle")
    hello = _hello([sys.executable, "-c", BOOTSTRAP, WORKER_PROGRAM])
    assert hello["codecs"] == ["pickle", "cloudpickle"]


def test_hello_does_not_offer_cloudpickle_where_it_cannot_be_imported() -> None:
    hello = _hello([sys.executable, "-c", _NO_SITE_PACKAGES, WORKER_PROGRAM])
    assert hello["codecs"] == ["pickle"]


@pytest.mark.anyio
async def test_remote_traceback_shows_the_users_frames_not_the_worker_loop() -> None:
    with anyio.fail_after(30):
        async with WorkerPool(1) as pool:
            with pytest.raises(LookupError, match="the user's own error") as caught:
                await pool.run_sync(pfuncs.users_outer_function, "the user's own error")
    remote = caught.value.__cause__
    assert isinstance(remote, RemoteTraceback)
    text = str(remote)
    assert "Traceback (most recent call last):\n" in text
    # The user's frames, outermost first, and the exception line...
    assert text.index("users_outer_function") < text.index("users_inner_function")
    assert "LookupError: the user's own error" in text
    # ...and nothing of procio's worker program.
    assert "_worker.py" not in text
    assert "_serve" not in text
    assert "func(*args)" not in text


async def _refused_message() -> str:
    async with ProcessBackend() as backend:
        with pytest.raises(TypeError) as caught:
            await backend.start_worker({"stdout": None})
    return str(caught.value)


@pytest.mark.anyio
async def test_error_messages_name_doc_pages_not_repository_paths() -> None:
    message = await _refused_message()
    assert "stdout" in message
    assert "docs/" not in message
    assert ".md" not in message
    assert "the worker protocol page of procio's documentation" in message


def test_module_docstrings_name_doc_pages_not_repository_paths() -> None:
    assert _wire.__doc__ is not None
    assert "docs/" not in _wire.__doc__
    assert "worker protocol page" in _wire.__doc__
