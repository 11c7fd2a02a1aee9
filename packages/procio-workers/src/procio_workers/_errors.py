"""The exceptions that procio_workers raises."""

from __future__ import annotations

import signal as _signal
from collections.abc import Sequence

import anyio


class BrokenWorkerProcess(anyio.BrokenWorkerProcess):
    """A worker died, or broke the protocol, while it owned a call.

    Only the call that was running on it fails; the pool carries on with other workers.
    ``str()`` of the exception says what happened, followed by the last lines the worker
    wrote to its standard error.

    Attributes:
        pid: the process id of the worker, if it had one.
        returncode: its exit status, negative for a signal (as :attr:`Popen.returncode`),
            or ``None`` if it was not known.
        stderr_tail: the last lines the worker wrote to its standard error.
        started: whether the call had reached the worker (the *started* argument,
            ``True`` unless told otherwise); a pool runs a call that had not on another
            worker instead of failing it.
    """

    def __init__(
        self,
        reason: str,
        *,
        pid: int | None = None,
        returncode: int | None = None,
        stderr_tail: Sequence[str] = (),
        started: bool = True,
    ) -> None:
        self.reason = reason
        self.pid = pid
        self.returncode = returncode
        self.stderr_tail = tuple(stderr_tail)
        self.started = started
        super().__init__(self._describe())

    @property
    def exit_code(self) -> int | None:
        """The exit status if the worker exited on its own, else ``None``."""
        if self.returncode is None or self.returncode < 0:
            return None
        return self.returncode

    @property
    def signal(self) -> _signal.Signals | int | None:
        """The signal that ended the worker, or ``None`` if no signal did."""
        if self.returncode is None or self.returncode >= 0:
            return None
        try:
            return _signal.Signals(-self.returncode)
        except ValueError:
            return -self.returncode

    def _describe(self) -> str:
        who = f"worker process {self.pid}" if self.pid is not None else "worker"
        text = f"{who}: {self.reason}"
        sig = self.signal
        if isinstance(sig, _signal.Signals):
            text += f" (killed by {sig.name})"
        elif sig is not None:
            text += f" (killed by signal {sig})"
        elif self.returncode is not None:
            text += f" (exit status {self.returncode})"
        if self.stderr_tail:
            text += "\nlast lines of its standard error:\n" + "\n".join(
                f"    {line}" for line in self.stderr_tail
            )
        return text

    def __reduce__(self) -> tuple[object, ...]:
        return (
            _rebuild_broken,
            (self.reason, self.pid, self.returncode, self.stderr_tail, self.started),
        )


def _rebuild_broken(
    reason: str,
    pid: int | None,
    returncode: int | None,
    stderr_tail: Sequence[str],
    started: bool = True,  # absent from what older releases pickled
) -> BrokenWorkerProcess:
    return BrokenWorkerProcess(
        reason, pid=pid, returncode=returncode, stderr_tail=stderr_tail, started=started
    )


class RemoteTraceback(Exception):  # noqa: N818 - a traceback, not an error of its own
    """The traceback of an exception as the worker formatted it.

    Set as the ``__cause__`` of an exception re-raised from a worker, so that the usual
    report shows where in the function it was raised.
    """

    def __init__(self, traceback: str) -> None:
        super().__init__(traceback)
        self.traceback = traceback

    def __str__(self) -> str:
        return f"\n\nTraceback in the worker process:\n{self.traceback}"


class WorkerError(Exception):
    """The function failed in a way that cannot be re-raised as it is in the parent.

    Raised when the function raised ``SystemExit``, ``KeyboardInterrupt`` or another
    ``BaseException`` that must not end the parent, or an exception the parent cannot
    rebuild (say, its class cannot be imported here). The worker stays healthy.

    Attributes:
        type_name: the fully qualified name of the exception's class.
        message: ``str()`` of the exception in the worker.
        traceback: the traceback as the worker formatted it.
        exception: the exception itself if it could be rebuilt here, else ``None``.
    """

    def __init__(
        self,
        type_name: str,
        message: str,
        traceback: str,
        exception: BaseException | None = None,
    ) -> None:
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.exception = exception
        super().__init__(f"{type_name}: {message}" if message else type_name)

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.type_name, self.message, self.traceback, None))


class SerializationError(TypeError):
    """A call's arguments or its result could not be serialized or rebuilt.

    Raised for arguments before any worker is reserved; for a result, after the call
    ran, with the worker still healthy.
    """


class BatchError(Exception):
    """Item *index* of a batch raised *error*; for the authors of worker backends.

    :meth:`procio_workers.abc.Worker.call_batch` raises it so that the pool knows which
    item failed and keeps the results of the items before it. Callers of
    :meth:`~procio_workers.WorkerPool.map` never see it: the map raises *error* itself.

    Attributes:
        index: the position of the failing item in the batch (from 0).
        results: the results of the items before it, in order.
        error: the exception the item raised, rebuilt in the parent.
    """

    def __init__(self, index: int, results: Sequence[object], error: BaseException) -> None:
        super().__init__(index, error)
        self.index = index
        self.results = list(results)
        self.error = error

    def __str__(self) -> str:
        return f"item {self.index} of the batch raised {self.error!r}"
