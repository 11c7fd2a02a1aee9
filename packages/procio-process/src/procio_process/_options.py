"""The options of starting a child, declared once, and what every way of starting checks.

:func:`~procio_process.open_process` and :func:`~procio_process.run_process` spell
their keyword arguments out, for users and type checkers; each gathers them into one
:class:`Options` and hands that down, so the platform modules read one declaration.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from os import PathLike
from typing import IO, Any, TypeAlias

from ._policy import CancelPolicy

StrOrBytesPath: TypeAlias = "str | bytes | PathLike[str] | PathLike[bytes]"

PIPE = subprocess.PIPE
DEVNULL = subprocess.DEVNULL
STDOUT = subprocess.STDOUT

#: The policy of open_process() and run_process() when none is given.
DEFAULT_POLICY = CancelPolicy()

# Marks the options that are procio's own: anyio.open_process takes all the others.
_PROCIO_ONLY = {"procio": True}


@dataclass(frozen=True)
class Options:
    """The keyword arguments of :func:`~procio_process.open_process`, after the command.

    The first thirteen are :func:`anyio.open_process`'s and mean what they mean for
    :class:`subprocess.Popen`; *popen_kwargs* holds any further ``Popen`` keyword.
    Gathered as given: :func:`check_arguments` and the platform's start validate them.
    """

    stdin: int | IO[Any] | None
    stdout: int | IO[Any] | None
    stderr: int | IO[Any] | None
    cwd: StrOrBytesPath | None
    env: Mapping[str, str] | None
    startupinfo: Any
    creationflags: int
    start_new_session: bool
    pass_fds: Sequence[int]
    user: str | int | None
    group: str | int | None
    extra_groups: Iterable[str | int] | None
    umask: int
    cancel_policy: CancelPolicy = field(metadata=_PROCIO_ONLY)
    signal_tree: bool = field(metadata=_PROCIO_ONLY)
    popen_kwargs: Mapping[str, Any] = field(metadata=_PROCIO_ONLY)

    def anyio_kwargs(self) -> dict[str, Any]:
        """The options :func:`anyio.open_process` takes, by keyword (streams included)."""
        return {
            option.name: getattr(self, option.name)
            for option in fields(self)
            if not option.metadata.get("procio")
        }


# Popen options that procio sets from its own arguments: passing them is a mistake.
_REFUSED_POPEN_KWARGS = {
    "args": "pass the command as the first argument",
    "shell": "a str or bytes command runs in the shell, a sequence runs directly",
}
# Popen options that would turn the pipes into something other than byte streams. They
# do nothing when no stream is a pipe (a worker started with file descriptors, say), and
# are accepted then, so that any Popen option can still pass through.
_PIPE_POPEN_KWARGS = {
    "text": "the streams carry bytes; wrap them in procio_text to decode",
    "universal_newlines": "the streams carry bytes; wrap them in procio_text to decode",
    "encoding": "the streams carry bytes; wrap them in procio_text to decode",
    "errors": "the streams carry bytes; wrap them in procio_text to decode",
    "bufsize": "the streams are unbuffered pipes",
}


def _check_stream_spec(name: str, value: object, *, allow_stdout: bool = False) -> None:
    if value is None:
        return
    if isinstance(value, bool):
        raise TypeError(f"{name} must be PIPE, DEVNULL, a file descriptor or a file, not a bool")
    if isinstance(value, int):
        allowed = {PIPE, DEVNULL} | ({STDOUT} if allow_stdout else set())
        if value < 0 and value not in allowed:
            if value == STDOUT:
                raise ValueError(f"{name}=STDOUT is only valid for stderr")
            raise ValueError(f"{name} must be PIPE, DEVNULL or a file descriptor, not {value}")
        return
    if not callable(getattr(value, "fileno", None)):
        raise TypeError(
            f"{name} must be PIPE, DEVNULL, a file descriptor or an object with fileno(), "
            f"not {type(value).__name__}"
        )


def normalize_command(
    command: StrOrBytesPath | Sequence[StrOrBytesPath],
) -> tuple[str | bytes | list[str | bytes | PathLike[str] | PathLike[bytes]], bool]:
    """Return the command as (a str, bytes or list of arguments, whether it runs in a shell).

    Raises:
        TypeError: for a command or an argument of the wrong type.
        ValueError: for an empty command.
    """
    if isinstance(command, PathLike):
        command = os.fspath(command)
    if isinstance(command, (str, bytes)):
        if not command:
            raise ValueError("the command must not be empty")
        return command, True
    if isinstance(command, (bytearray, memoryview)) or not isinstance(command, Iterable):
        raise TypeError(
            "the command must be a str or bytes (run by the shell) or a sequence of "
            f"arguments, not {type(command).__name__}"
        )
    args = list(command)
    if not args:
        raise ValueError("the command must not be an empty sequence")
    for arg in args:
        if not isinstance(arg, (str, bytes, PathLike)):
            raise TypeError(
                f"every argument must be a str, bytes or path, not {type(arg).__name__}: {arg!r}"
            )
    return args, False


def check_arguments(
    command: StrOrBytesPath | Sequence[StrOrBytesPath], options: Options
) -> tuple[str | bytes | list[Any], bool]:
    """Refuse what no way of starting a child accepts; return (args, whether shell)."""
    args, shell = normalize_command(command)
    stdin, stdout, stderr = options.stdin, options.stdout, options.stderr
    _check_stream_spec("stdin", stdin)
    _check_stream_spec("stdout", stdout)
    _check_stream_spec("stderr", stderr, allow_stdout=True)
    cancel_policy = options.cancel_policy
    if not isinstance(cancel_policy, CancelPolicy):
        raise TypeError(f"cancel_policy must be a CancelPolicy, not {type(cancel_policy).__name__}")
    for key in options.popen_kwargs:
        if key in _REFUSED_POPEN_KWARGS:
            raise TypeError(f"open_process() does not accept {key}=: {_REFUSED_POPEN_KWARGS[key]}")
        if key in _PIPE_POPEN_KWARGS and PIPE in (stdin, stdout, stderr):
            raise TypeError(f"{key}= does not go with PIPE streams: {_PIPE_POPEN_KWARGS[key]}")
    return args, shell
