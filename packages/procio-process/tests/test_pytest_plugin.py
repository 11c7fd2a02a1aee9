"""The leak checker plugin, run on small test files of its own as a user would."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
from procio_process.pytest_plugin import MARKER_VARIABLE, LeakChecker, LeakError

pytest_plugins = ["pytester"]

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="marks processes via /proc")


def _kill_pids_in(path: Path) -> None:
    for pid in path.read_text().split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)


def _assert_the_escaped_process_is_found(pytester: pytest.Pytester, pids: Path) -> None:
    """Run the test file made, whose one test leaves behind a process that escaped into
    a session of its own and wrote its pid to *pids*; kill that process, then check
    that the test passed and that the leak check failed, naming it."""
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    orphan = pids.read_text().split()[0]
    _kill_pids_in(pids)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [f"*processes started by the test still running elsewhere: [[]'{orphan} *"]
    )


def test_the_plugin_is_registered_for_pytest() -> None:
    found = {ep.name: ep.value for ep in entry_points(group="pytest11")}
    assert found.get("procio_process") == "procio_process.pytest_plugin"


def test_a_leaked_pipe_fails_the_marked_test_and_names_it(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os, pytest
        leaked = []

        @pytest.mark.procio_leak_check
        def test_leaks():
            leaked.extend(os.pipe())

        def test_unmarked_leaks_unchecked():
            leaked.extend(os.pipe())

        def test_cleanup():
            for fd in leaked:
                os.close(fd)
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, errors=1)
    result.stdout.fnmatch_lines(["*LeakError: file descriptors left open: {*pipe:*"])


def test_a_zombie_and_a_running_child_are_both_reported(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pytester.makepyfile(
        f"""
        import os, time

        def test_leaks(procio_leak_check):
            zombie = os.posix_spawnp("true", ["true"], os.environ)  # exits, never reaped
            sleeper = os.posix_spawnp("sleep", ["sleep", "30"], os.environ)
            with open({str(pids)!r}, "w") as f:
                f.write(f"{{zombie}} {{sleeper}}")
            time.sleep(0.5)  # long enough for true to have exited
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    zombie, sleeper = (int(pid) for pid in pids.read_text().split())
    os.kill(sleeper, signal.SIGKILL)
    for pid in (zombie, sleeper):
        os.waitpid(pid, 0)
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(
        [
            f"*LeakError: child processes never reaped (zombies): [[]{zombie}[]]; "
            f"child processes still running: [[]'{sleeper} sleep'[]]"
        ]
    )


@linux_only
def test_an_escaped_process_caught_in_the_middle_of_its_exec_is_found(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    # While a process is inside an exec, its environment can read as empty: the new
    # program's has not been set up yet. The escaped process here holds that state for
    # 20 ms (a Python started with an empty environment, which then execs a sleep with
    # the marker), so the check meets it there every time. It must still be found.
    pids = tmp_path / "pids"
    pytester.makepyfile(
        f"""
        import os, shutil, subprocess, sys, pytest
        from procio_process.pytest_plugin import MARKER_VARIABLE

        LATER = (
            "import os, sys, time; time.sleep(0.02); "
            "os.execve(sys.argv[1], ['sleep', '30'], {{sys.argv[2]: sys.argv[3]}})"
        )

        @pytest.mark.procio_leak_check
        def test_orphans_a_process_mid_exec():
            subprocess.run(
                [
                    "sh",
                    "-c",
                    'env -i setsid "$@" & echo $! > {pids}',
                    "sh",
                    sys.executable,
                    "-c",
                    LATER,
                    shutil.which("sleep"),
                    MARKER_VARIABLE,
                    os.environ[MARKER_VARIABLE],
                ],
                check=True,
            )
        """
    )
    _assert_the_escaped_process_is_found(pytester, pids)


@linux_only
def test_a_grandchild_that_outlives_its_parent_is_found(
    pytester: pytest.Pytester, tmp_path: Path
) -> None:
    pids = tmp_path / "pids"
    pytester.makepyfile(
        f"""
        import subprocess, pytest

        @pytest.mark.procio_leak_check
        def test_orphans_a_sleep():
            # The shell starts a sleep in a session of its own and exits: the sleep is
            # reparented away from this process, out of reach of a descendants walk.
            subprocess.run(
                ["sh", "-c", "setsid sleep 30 & echo $! > {pids}"], check=True
            )
        """
    )
    _assert_the_escaped_process_is_found(pytester, pids)


def test_a_test_that_cleans_up_passes_and_the_marker_is_removed(
    pytester: pytest.Pytester,
) -> None:
    pytester.makepyfile(
        """
        import os, subprocess, pytest
        from procio_process.pytest_plugin import MARKER_VARIABLE

        @pytest.mark.procio_leak_check
        def test_clean():
            assert MARKER_VARIABLE in os.environ
            read, write = os.pipe()
            os.close(read)
            os.close(write)
            subprocess.run(["true"], check=True)

        def test_after():
            assert MARKER_VARIABLE not in os.environ
        """
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_checker_alone_raises_with_each_kind_in_its_attribute() -> None:
    checker = LeakChecker()
    read, write = os.pipe()
    try:
        with pytest.raises(LeakError) as caught:
            checker.check()
    finally:
        os.close(read)
        os.close(write)
    assert set(caught.value.fds) == {read, write}
    assert caught.value.zombies == []
    assert caught.value.running == []
    assert MARKER_VARIABLE not in os.environ or os.environ[MARKER_VARIABLE] != checker._token
    assert LeakChecker().leaks() is None


def test_a_marker_set_by_an_outer_checker_is_restored() -> None:
    outer = LeakChecker()
    outer_value = os.environ.get(MARKER_VARIABLE)
    inner = LeakChecker()
    inner.check()
    assert os.environ.get(MARKER_VARIABLE) == outer_value
    outer.check()
