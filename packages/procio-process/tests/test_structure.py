"""How the package is put together: one declaration of the options, one handle type.

``open_process`` and ``run_process`` spell out AnyIO's keyword arguments; internally
they travel as one ``Options``. These tests catch the spellings drifting apart, and
a ``Process`` made by hand instead of by ``open_process``.
"""

from __future__ import annotations

import inspect
import sys
from dataclasses import fields

import anyio
import pytest
from procio_process import CancelPolicy, Process, open_process, run_process
from procio_process._delegated import DelegatedProcess
from procio_process._options import Options
from procio_process._posix import PosixProcess

# run_process's own arguments, which are not options of starting a child.
_RUN_ONLY = {"input", "check", "timeout", "task_status"}


def _keyword_names(function: object) -> set[str]:
    parameters = inspect.signature(function).parameters.values()  # type: ignore[arg-type]
    return {p.name for p in parameters if p.kind is inspect.Parameter.KEYWORD_ONLY}


def test_open_process_keywords_are_the_declared_options() -> None:
    declared = {option.name for option in fields(Options)} - {"popen_kwargs"}
    assert _keyword_names(open_process) == declared


def test_run_process_keywords_are_the_declared_options_and_its_own() -> None:
    declared = {option.name for option in fields(Options)} - {"popen_kwargs"}
    assert _keyword_names(run_process) == declared | _RUN_ONLY


def test_the_options_handed_to_anyio_are_exactly_what_anyio_open_process_takes() -> None:
    anyio_keywords = _keyword_names(anyio.open_process)
    options = Options(
        **{option.name: None for option in fields(Options)}  # type: ignore[arg-type]
    )
    assert set(options.anyio_kwargs()) == anyio_keywords


def test_defaults_match_between_open_process_and_run_process() -> None:
    # stdin is the one default AnyIO gives differently (PIPE here, None there).
    open_defaults = inspect.signature(open_process).parameters
    run_defaults = inspect.signature(run_process).parameters
    for option in fields(Options):
        if option.name in ("popen_kwargs", "stdin"):
            continue
        assert open_defaults[option.name].default == run_defaults[option.name].default, option.name


def test_both_handles_are_processes_and_neither_is_the_other() -> None:
    assert issubclass(PosixProcess, Process)
    assert issubclass(DelegatedProcess, Process)
    assert not issubclass(PosixProcess, DelegatedProcess)
    assert not issubclass(DelegatedProcess, PosixProcess)
    assert issubclass(Process, anyio.abc.Process)


@pytest.mark.anyio
async def test_open_process_gives_the_posix_handle_here() -> None:
    if sys.platform == "win32":
        pytest.skip("on Windows AnyIO starts the child (the delegated handle)")
    async with await open_process(["true"]) as process:
        assert type(process) is PosixProcess
        assert isinstance(process, anyio.abc.Process)


def test_process_cannot_be_constructed_by_users() -> None:
    # (Type checkers object to these calls too, hence the ignores: the test is that
    # they fail at run time, with a message that says what to do instead.)
    with pytest.raises(TypeError, match=r"open_process\(\)"):
        Process()  # type: ignore[abstract, call-arg]
    with pytest.raises(TypeError, match=r"open_process\(\)"):
        Process(CancelPolicy(), signal_tree=False)  # type: ignore[abstract]


def test_neither_platform_handle_can_be_constructed_by_users() -> None:
    # Given what their constructors take, they would build a handle over nothing.
    with pytest.raises(TypeError, match=r"open_process\(\)"):
        PosixProcess(None, None, None, None, None, CancelPolicy(), signal_tree=False)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"open_process\(\)"):
        DelegatedProcess(None, CancelPolicy())  # type: ignore[arg-type]
