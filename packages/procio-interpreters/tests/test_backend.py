"""InterpreterBackend through a real WorkerPool: results, values, errors, policy, cancellation."""

from __future__ import annotations

import os
import sys
import threading
import types
from collections.abc import AsyncIterator, Callable, Iterator

import anyio
import anyio.lowlevel

# On sys.path through conftest.py, so that subinterpreters import it by name too; the
# project's type check sees it as tests.funcs.interp_funcs and cannot follow this import.
import interp_funcs as funcs  # type: ignore[import-not-found, unused-ignore]
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from procio_interpreters import InterpreterBackend, InterpreterWorker
from procio_interpreters._runtime import interpreter_ids
from procio_process.pytest_plugin import LeakChecker
from procio_workers import (
    BrokenWorkerProcess,
    RemoteTraceback,
    SerializationError,
    WorkerError,
    WorkerPool,
)
from procio_workers.testing import check_backend

NEEDS_3_13 = pytest.mark.skipif(
    sys.version_info < (3, 13),
    reason="procio-interpreters needs Python 3.13 or newer (subinterpreters with their own GIL)",
)

pytestmark = [pytest.mark.anyio, NEEDS_3_13]

#: Turns a hang into a failure.
TIMEOUT = 30


def pool(**kwargs: object) -> WorkerPool:
    return WorkerPool(backend=InterpreterBackend(), **kwargs)  # type: ignore[arg-type]  # options pass through


def host_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "procio-interpreter"]


async def eventually(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    """Poll *check* until it holds or *timeout* seconds pass; return its last answer."""
    with anyio.move_on_after(timeout):
        # What is polled (threads, interpreters) has no event to wait on.
        while not check():  # noqa: ASYNC110
            await anyio.sleep(0.01)
    return check()


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    os.close(read)
    os.close(write)


@pytest.fixture(autouse=True)
async def nothing_left_behind(anyio_backend: object) -> AsyncIterator[None]:
    """Every test ends with only the interpreters, threads and descriptors it began with.

    Checked inside the event loop rather than with procio_leak_check, because anyio's
    runner keeps one loop across tests. Not the descriptors on uvloop: there, the test
    runner itself leaves a socket pair open between a fixture's start and its end, even
    around an empty test; asyncio and Trio run the same backend code and are checked.
    """
    uvloop = "loop_factory" in str(anyio_backend)
    before = interpreter_ids()
    checker = None if uvloop else LeakChecker()
    yield
    assert interpreter_ids() == before
    assert host_threads() == []
    if checker is not None:
        checker.check()


# -- the contract ---------------------------------------------------------------------


async def test_the_backend_passes_the_conformance_kit() -> None:
    # The kit's backend check applies whole. Its launcher and worker-command checks do
    # not: they start worker processes and speak the wire protocol over pipes, and an
    # interpreter worker has neither a process (its pid is None) nor that protocol.
    await check_backend(InterpreterBackend)


async def test_calls_run_in_another_interpreter_of_this_process() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            assert await workers.run_sync(funcs.process_id) == os.getpid()
            first = await workers.run_sync(funcs.interpreter_id)
            assert first != funcs.interpreter_id()
            assert first in interpreter_ids()
            assert await workers.run_sync(funcs.interpreter_id) == first, "reused"
    assert first not in interpreter_ids(), "destroyed when the pool closed"


async def test_two_workers_run_calls_at_the_same_time() -> None:
    a_read, a_write = os.pipe()
    b_read, b_write = os.pipe()
    try:
        with anyio.fail_after(TIMEOUT):
            async with pool(max_workers=2) as workers:
                results: list[object] = []

                async def one(mine: int, theirs: int) -> None:
                    results.append(await workers.run_sync(funcs.rendezvous, mine, theirs, 10.0))

                async with anyio.create_task_group() as tg:
                    tg.start_soon(one, a_write, b_read)
                    tg.start_soon(one, b_write, a_read)
                assert results == [True, True]
                assert workers.statistics().started == 2
    finally:
        for fd in (a_read, a_write, b_read, b_write):
            os.close(fd)


async def test_every_call_lets_other_tasks_run(anyio_backend: object) -> None:
    ticks = 0
    seen: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await anyio.lowlevel.checkpoint()

    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers, anyio.create_task_group() as tg:
            await workers.run_sync(funcs.identity, 0)
            tg.start_soon(ticker)
            for index in range(20):
                before = ticks
                await workers.run_sync(funcs.identity, index)
                seen.append(ticks - before)
            tg.cancel_scope.cancel()
    if "trio" in str(anyio_backend):
        # Trio may resume the caller before the ticker in the same batch, so not every
        # call shows a tick; calls that never yield would show none at all.
        assert sum(seen) > 0, f"the calls held the event loop: {seen}"
    else:
        # asyncio runs ready tasks in order: a call that yields lets the ticker run.
        assert all(seen), f"calls that held the event loop: {seen}"


async def test_an_interpreter_imports_neither_anyio_nor_procio() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            loaded = set(await workers.run_sync(funcs.loaded_modules))
    assert "_procio_interpreters_guest" in loaded
    heavy = {name for name in loaded if name.split(".")[0] in HEAVY}
    assert not heavy, f"a cold interpreter imported {sorted(heavy)}"


#: What the guest must not import: the event loop stack, procio's own packages, and
#: typing (several milliseconds in a fresh interpreter).
HEAVY = {"anyio", "trio", "asyncio", "procio_workers", "procio_interpreters", "typing"}


def test_the_guest_module_imports_only_the_standard_library() -> None:
    import ast
    from pathlib import Path

    from procio_interpreters import _guest

    tree = ast.parse(Path(_guest.__file__).read_text(encoding="utf-8"))
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    imported -= {"__future__"}
    assert imported <= set(sys.stdlib_module_names), imported - set(sys.stdlib_module_names)


async def test_process_options_are_refused_with_a_type_error() -> None:
    backend = InterpreterBackend()
    with pytest.raises(TypeError, match="not a process"):
        await backend.start_worker({"cwd": "/"})


# -- values ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        -(2**63),
        2**200,  # beyond what an interpreter queue carries: pickled
        float("inf"),
        -0.0,
        "ünïcode",
        b"\xff\xfe\x00 undecodable",
        (1, ("nested", b"x"), 2.5, None),
        [1, {"a": frozenset({2})}],
        funcs.Colour.RED,
        funcs.Text("a str subclass"),
    ],
    ids=repr,
)
async def test_values_come_back_equal_and_of_the_same_type(value: object) -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            back = await workers.run_sync(funcs.identity, value)
            assert type(back) is type(value)
            assert back == value or (back != back and value != value)
            assert await workers.run_sync(funcs.type_name, value) == funcs.type_name(value)


async def test_a_memoryview_is_shared_without_a_copy() -> None:
    data = bytearray(1 << 20)
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            assert await workers.run_sync(funcs.fill, memoryview(data), 7) == len(data)
    assert data == bytes([7]) * len(data), "the function wrote into the caller's memory"


async def test_a_bytearray_is_copied_and_the_callers_stays_unchanged() -> None:
    data = bytearray(b"\x01" * 100_000)
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            assert await workers.run_sync(funcs.mutate_bytearray, data) == len(data)
    assert data[0] == 1


async def test_out_of_band_buffers_arrive_as_copies_the_function_may_change() -> None:
    data = bytearray(b"\x01" * 100_000)
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            assert await workers.run_sync(funcs.scribble, funcs.Blob(data)) == len(data)
    assert data[0] == 1, "the function wrote into the caller's memory"


async def test_an_unpicklable_argument_fails_before_any_worker_starts() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            with pytest.raises(SerializationError, match="could not be pickled"):
                await workers.run_sync(funcs.identity, threading.Lock())
            with pytest.raises(SerializationError, match="cannot be sent"):
                await workers.run_sync(lambda: None)
            assert workers.statistics().started == 0


async def test_an_unpicklable_result_is_a_serialization_error_and_the_worker_lives_on() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            first = await workers.run_sync(funcs.interpreter_id)
            with pytest.raises(SerializationError, match="could not be sent back") as caught:
                await workers.run_sync(funcs.return_lock)
            assert isinstance(caught.value.__cause__, RemoteTraceback)
            assert await workers.run_sync(funcs.interpreter_id) == first
            assert workers.statistics().broken == 0


async def test_a_memoryview_in_a_result_comes_back_as_a_copy() -> None:
    words = memoryview(bytearray(range(16))).cast("I")
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            # A memoryview argument is shared; the same view as the result is copied.
            back = await workers.run_sync(funcs.identity, words)
            assert isinstance(back, memoryview)
            assert back.tobytes() == words.tobytes()
            assert back.obj is not words.obj
            # Inside a structure that must be pickled (a list), both ways.
            nested = await workers.run_sync(funcs.identity, [words, b"x"])
            assert [bytes(nested[0]), nested[1]] == [words.tobytes(), b"x"]


async def test_a_function_the_interpreter_cannot_import_is_a_serialization_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A module that exists only in this interpreter: the function names it, but a
    # subinterpreter cannot import it.
    module = types.ModuleType("procio_interpreters_not_on_disk")
    exec("def nowhere():\n    return 1\n", module.__dict__)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            first = await workers.run_sync(funcs.interpreter_id)
            with pytest.raises(SerializationError, match="No module named") as caught:
                await workers.run_sync(module.nowhere)
            assert isinstance(caught.value.__cause__, RemoteTraceback)
            assert await workers.run_sync(funcs.interpreter_id) == first, "the worker lives on"


SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=False),
    st.text(),
    st.binary(),
)
SHAREABLE_SHAPES = st.recursive(SCALARS, lambda inner: st.tuples(inner, inner), max_leaves=12)


@settings(max_examples=15, deadline=None)
@given(values=st.lists(SHAREABLE_SHAPES, max_size=6))
async def test_any_nesting_of_shareable_values_comes_back_exactly(values: list[object]) -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            back = await workers.run_sync(funcs.identity, tuple(values))
    assert back == tuple(values)
    assert funcs.type_name(back) == "builtins.tuple"

    def types_of(value: object) -> object:
        if type(value) is tuple:
            return tuple(types_of(item) for item in value)
        return type(value)

    assert types_of(back) == types_of(tuple(values))


async def test_a_pickled_callable_arrives_fresh_for_every_call() -> None:
    counter = funcs.Counter()
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            assert [await workers.run_sync(counter) for _ in range(3)] == [1, 1, 1]
    assert counter.count == 0, "the caller's object is not the one that ran"


# -- errors ---------------------------------------------------------------------------


async def test_the_functions_own_traceback_comes_back() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            with pytest.raises(ValueError, match="no good: 3") as caught:
                await workers.run_sync(funcs.fail_deep, 3)
    cause = caught.value.__cause__
    assert isinstance(cause, RemoteTraceback)
    assert "_inner_failure" in cause.traceback
    assert "fail_deep" in cause.traceback
    assert "_guest" not in cause.traceback, "the guest loop's own frames are left out"


@pytest.mark.parametrize(
    ("function", "name"),
    [(funcs.exit_interpreter, "SystemExit"), (funcs.interrupt, "KeyboardInterrupt")],
)
async def test_exit_and_interrupt_in_the_function_are_worker_errors(
    function: Callable[..., object], name: str
) -> None:
    args = (3,) if function is funcs.exit_interpreter else ()
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            first = await workers.run_sync(funcs.interpreter_id)
            with pytest.raises(WorkerError) as caught:
                await workers.run_sync(function, *args)
            assert caught.value.type_name == name
            assert await workers.run_sync(funcs.interpreter_id) == first, "the worker lives on"


async def test_an_exception_that_cannot_be_pickled_is_a_worker_error() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            with pytest.raises(WorkerError) as caught:
                await workers.run_sync(funcs.raise_unpicklable)
    assert caught.value.type_name == "interp_funcs.Unpicklable"
    assert caught.value.message == "holds a lock"
    assert "raise_unpicklable" in caught.value.traceback


async def test_what_a_subinterpreter_cannot_do_comes_back_as_typed_errors() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            with pytest.raises(RuntimeError, match="fork"):
                await workers.run_sync(funcs.try_fork)
            with pytest.raises(ValueError, match="main interpreter"):
                await workers.run_sync(funcs.try_signal)
            with pytest.raises(ImportError, match="does not support loading in subinterpreters"):
                await workers.run_sync(funcs.import_module, "_testsinglephase")
            assert await workers.run_sync(funcs.identity, 1) == 1


# -- pool policy ----------------------------------------------------------------------


async def test_the_initializer_runs_once_in_each_new_interpreter() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1, initializer=funcs.remember, initargs=("set",)) as workers:
            assert await workers.run_sync(funcs.remembered) == "set"
    # Each interpreter has its own modules: the parent's copy was never touched.
    assert funcs.REMEMBERED is None


async def test_a_failing_initializer_is_a_broken_worker() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1, initializer=funcs.fail_initializer) as workers:
            with pytest.raises(BrokenWorkerProcess, match="initializer refuses"):
                await workers.run_sync(funcs.identity, 1)


async def test_max_tasks_per_worker_retires_the_interpreter() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1, max_tasks_per_worker=1) as workers:
            first = await workers.run_sync(funcs.interpreter_id)
            second = await workers.run_sync(funcs.interpreter_id)
            assert first != second
            assert await eventually(lambda: first not in interpreter_ids())
            assert workers.statistics().started == 2


async def test_an_idle_interpreter_is_destroyed_after_the_idle_timeout() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1, idle_timeout=0.05) as workers:
            first = await workers.run_sync(funcs.interpreter_id)
            assert await eventually(lambda: workers.statistics().workers == 0)
            assert await eventually(lambda: first not in interpreter_ids())
            assert await workers.run_sync(funcs.interpreter_id) != first


async def test_a_worker_killed_while_idle_refuses_a_call_as_not_started() -> None:
    backend = InterpreterBackend()
    with anyio.fail_after(TIMEOUT):
        worker = await backend.start_worker({})
        assert isinstance(worker, InterpreterWorker)
        alive = [worker.alive]
        worker.kill()
        alive.append(worker.alive)
        assert alive == [True, False]
        with pytest.raises(BrokenWorkerProcess) as caught:
            await worker.call(backend.prepare_call(funcs.identity, (1,)))
        assert caught.value.started is False
        await worker.aclose()


async def test_running_out_of_descriptors_fails_the_start_cleanly_and_the_pool_recovers() -> None:
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1, max_tasks_per_worker=1) as workers:
            assert await workers.run_sync(funcs.identity, 1) == 1
            resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))
            try:
                with pytest.raises(OSError, match="Too many open files"):
                    await workers.run_sync(funcs.identity, 2)
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            assert await workers.run_sync(funcs.identity, 3) == 3


async def test_a_function_that_closes_the_guests_descriptor_breaks_only_its_worker() -> None:
    with anyio.fail_after(TIMEOUT):
        async with pool(max_workers=1) as workers:
            first = await workers.run_sync(funcs.interpreter_id)
            with pytest.raises(BrokenWorkerProcess, match="ended during the call"):
                await workers.run_sync(funcs.close_own_wakeup_descriptor)
            assert await workers.run_sync(funcs.interpreter_id) != first
            assert workers.statistics().broken == 1


# -- cancellation ---------------------------------------------------------------------


async def test_a_cancellable_call_is_abandoned_and_its_interpreter_ends_when_it_returns(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    started_read, started_write = os.pipe()
    try:
        with anyio.fail_after(TIMEOUT):
            async with pool(max_workers=1) as workers:
                first = await workers.run_sync(funcs.interpreter_id)
                with anyio.CancelScope() as scope:

                    async def cancel_once_running() -> None:
                        await anyio.wait_readable(started_read)
                        scope.cancel()

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cancel_once_running)
                        await workers.run_sync(
                            funcs.wait_for_byte, read, started_write, cancellable=True
                        )
                assert scope.cancelled_caught
                # The caller was let go while the call still runs in its interpreter.
                assert first in interpreter_ids()
                # The pool goes on with a new interpreter.
                second = await workers.run_sync(funcs.interpreter_id)
                assert second != first
                os.write(write, b"!")
                assert await eventually(lambda: first not in interpreter_ids())
            assert await eventually(lambda: host_threads() == [])
    finally:
        os.close(started_read)
        os.close(started_write)


async def test_a_call_that_is_not_cancellable_runs_to_its_end(pipe: tuple[int, int]) -> None:
    read, write = pipe
    started_read, started_write = os.pipe()
    try:
        with anyio.fail_after(TIMEOUT):
            async with pool(max_workers=1) as workers:
                first = await workers.run_sync(funcs.interpreter_id)
                with anyio.CancelScope() as scope:

                    async def cancel_then_release() -> None:
                        await anyio.wait_readable(started_read)
                        scope.cancel()
                        os.write(write, b"!")

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(cancel_then_release)
                        await workers.run_sync(funcs.wait_for_byte, read, started_write)
                assert await workers.run_sync(funcs.interpreter_id) == first, "kept"
    finally:
        os.close(started_read)
        os.close(started_write)


class _Boom(Exception):
    pass


async def test_an_error_in_the_parent_mid_call_leaves_nothing_behind(
    pipe: tuple[int, int],
) -> None:
    read, write = pipe
    started_read, started_write = os.pipe()
    try:
        with anyio.fail_after(TIMEOUT), pytest.RaisesGroup(_Boom, flatten_subgroups=True):
            async with pool(max_workers=1) as workers, anyio.create_task_group() as tg:

                async def fail_once_running() -> None:
                    await anyio.wait_readable(started_read)
                    raise _Boom

                tg.start_soon(fail_once_running)
                await workers.run_sync(funcs.wait_for_byte, read, started_write, cancellable=True)
        os.write(write, b"!")
        assert await eventually(lambda: host_threads() == [])
    finally:
        os.close(started_read)
        os.close(started_write)


# -- parallel work --------------------------------------------------------------------


async def test_many_concurrent_calls_with_random_cancellation_each_get_their_own_result() -> None:
    import random

    rng = random.Random(1234)
    with anyio.fail_after(TIMEOUT * 2):
        async with pool(max_workers=2) as workers:
            outcomes: dict[int, object] = {}

            async def one(index: int) -> None:
                with anyio.move_on_after(rng.choice([0, 0.001, 0.01, 10])):
                    outcomes[index] = await workers.run_sync(
                        funcs.identity, ("call", index), cancellable=rng.random() < 0.5
                    )

            async with anyio.create_task_group() as tg:
                for index in range(200):
                    tg.start_soon(one, index)
            assert outcomes, "some calls finished"
            for index, value in outcomes.items():
                assert value == ("call", index)
            assert await workers.run_sync(funcs.identity, "after") == "after"
        assert await eventually(lambda: host_threads() == [])
