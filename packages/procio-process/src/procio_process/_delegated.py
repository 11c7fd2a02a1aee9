"""Children started by :func:`anyio.open_process`, where procio has no backend of its own.

On Windows, pipes are not file descriptors an event loop can poll, and each AnyIO
backend already drives them its own way (asyncio's proactor, Trio's I/O completion
ports). So there procio starts the child with :func:`anyio.open_process` and wraps it:
:class:`DelegatedProcess` is a :class:`~procio_process.Process`, with the same
cancellation policy, ``stop()``, ``timeout`` and ``task_status`` in
:func:`~procio_process.run_process`, over AnyIO's streams.

What AnyIO's function does not take is refused with a clear error instead of being
dropped: further ``Popen`` keyword arguments, and ``signal_tree`` (Windows has no
process groups to signal).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from contextlib import suppress
from signal import Signals

import anyio
import anyio.abc
from anyio import CancelScope

from ._options import Options, StrOrBytesPath, check_arguments
from ._policy import CancelPolicy
from ._process import Process


class DelegatedProcess(Process):
    """A :class:`~procio_process.Process` over a child that AnyIO started and drives."""

    def __init__(self, inner: anyio.abc.Process, cancel_policy: CancelPolicy) -> None:
        # Nothing of procio's own pipes, pidfd or Popen: every operation goes to *inner*.
        # No process groups here, so never signal_tree (start_delegated refuses it).
        super().__init__(cancel_policy, signal_tree=False)
        self._inner = inner

    def __repr__(self) -> str:
        return f"<{type(self).__name__} pid={self.pid} returncode={self._inner.returncode}>"

    @property
    def pid(self) -> int:
        """The process ID of the child."""
        return self._inner.pid

    @property
    def returncode(self) -> int | None:
        """The exit code, or ``None`` while the child runs."""
        return self._inner.returncode

    @property
    def stdin(self) -> anyio.abc.ByteSendStream | None:
        """The child's standard input, if it was opened with ``stdin=PIPE``."""
        return self._inner.stdin

    @property
    def stdout(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard output, if it was opened with ``stdout=PIPE``."""
        return self._inner.stdout

    @property
    def stderr(self) -> anyio.abc.ByteReceiveStream | None:
        """The child's standard error, if it was opened with ``stderr=PIPE``."""
        return self._inner.stderr

    async def wait(self) -> int:
        """Wait until the child exits and return its exit code."""
        return await self._inner.wait()

    def send_signal(self, signal: Signals) -> None:
        """Send *signal* to the child, unless it has already exited."""
        if self._inner.returncode is None:
            with suppress(ProcessLookupError):
                self._inner.send_signal(signal)

    def terminate(self) -> None:
        """Ask the child to exit (``TerminateProcess`` on Windows)."""
        if self._inner.returncode is None:
            with suppress(ProcessLookupError):
                self._inner.terminate()

    def kill(self) -> None:
        """Kill the child (``TerminateProcess`` on Windows)."""
        if self._inner.returncode is None:
            with suppress(ProcessLookupError):
                self._inner.kill()

    async def aclose(self) -> None:
        """Close the streams, then wait for the child, stopping it by policy if cancelled."""
        with CancelScope(shield=True):
            for stream in (self._inner.stdin, self._inner.stdout, self._inner.stderr):
                if stream is not None:
                    await stream.aclose()
        try:
            await self.wait()
        except BaseException:
            with CancelScope(shield=True):
                await self.stop()
            raise

    def _poll(self) -> int | None:
        return self._inner.returncode

    def _signal_polite(self, sig: Signals) -> None:
        if self._inner.returncode is None:
            with suppress(ProcessLookupError):
                if sig == Signals.SIGTERM:
                    self._inner.terminate()
                else:
                    self._inner.send_signal(sig)

    def _close_now(self) -> bool:
        return False  # AnyIO's streams close through the event loop: use aclose()


async def start(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
    before_spawn: Callable[[], Awaitable[None]],
    options: Options,
) -> DelegatedProcess:
    """Start *command* with :func:`anyio.open_process` and wrap it.

    *before_spawn* is not awaited: :func:`anyio.open_process` has its own checkpoint.
    What AnyIO does not take (further ``Popen`` keyword arguments, ``signal_tree``) is
    refused before anything starts.
    """
    args, _shell = check_arguments(command, options)
    if options.popen_kwargs:
        names = ", ".join(f"{key}=" for key in options.popen_kwargs)
        raise TypeError(
            f"{names}: on this platform children are started by anyio.open_process, "
            "which takes no further Popen keyword arguments"
        )
    if options.signal_tree:
        raise ValueError("signal_tree=True needs POSIX process groups")
    inner = await anyio.open_process(args, **options.anyio_kwargs())
    return DelegatedProcess._create(inner, options.cancel_policy)
