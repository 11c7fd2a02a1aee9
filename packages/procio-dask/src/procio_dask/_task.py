"""What runs on the Dask worker for each call.

Dask imports this module by name on its workers, so ``procio-dask`` must be installed
in the workers' environment as well as in the caller's.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

from procio_workers import WorkerError


def run_call(func: Callable[..., object], *args: object) -> object:
    """Call ``func(*args)`` on a Dask worker and keep the worker alive whatever it raises.

    Ordinary exceptions travel back through Dask as they are. ``SystemExit``,
    ``KeyboardInterrupt`` and other exceptions that are not :class:`Exception` would end
    the Dask worker (Dask lets them escape its task thread and restarts the worker), so
    they come back as a :class:`~procio_workers.WorkerError` instead, as they do from
    procio's local workers.
    """
    try:
        return func(*args)
    except Exception:
        raise
    except BaseException as exc:
        kind = type(exc)
        # Only the function's own frames: the first entry is this wrapper.
        text = "".join(
            traceback.format_exception(
                kind, exc, exc.__traceback__.tb_next if exc.__traceback__ else None
            )
        )
        raise WorkerError(f"{kind.__module__}.{kind.__qualname__}", str(exc), text) from None
