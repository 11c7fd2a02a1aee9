"""``async for`` over map and stream results: the same items as ``__anext__``, however mixed.

Before Python 3.12, ``async for`` steps an async generator made by ``__aiter__``
(cheaper per item there than a coroutine per ``__anext__``), kept out of the event
loop's async generator hooks; from 3.12 on, where a coroutine per item is the cheaper,
it steps the results object's own ``__anext__``. These tests hold both to the results
object's own contract: nothing lost or repeated when the two ways are mixed or a loop is
left and resumed, the hooks left as they were, an error final for every later loop.
CI runs this module on Python 3.13 as well as on the default interpreter, so both paths
are tested on every change.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import anyio
import pytest
from procio_workers import PickleSerializer, WorkerPool

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

pytestmark = pytest.mark.anyio

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45


async def test_anext_and_async_for_share_one_sequence() -> None:
    expected = [3 * x + 1 for x in range(50)]
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.triple_plus_one, range(50), chunksize=7) as results:
                got = [await results.__anext__() for _ in range(3)]
                async for value in results:
                    got.append(value)
                    if len(got) == 20:
                        break
                got.append(await results.__anext__())
                async for value in results:
                    got.append(value)
                # Ended: a further loop yields nothing, and __anext__ says so too.
                assert [value async for value in results] == []
                with pytest.raises(StopAsyncIteration):
                    await results.__anext__()
    assert got == expected


async def test_async_for_leaves_the_async_generator_hooks_as_they_were() -> None:
    before = sys.get_asyncgen_hooks()
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.triple_plus_one, range(30), chunksize=4) as results:
                async for _ in results:
                    assert sys.get_asyncgen_hooks() == before
                    break
                assert sys.get_asyncgen_hooks() == before
                assert [v async for v in results] == [3 * x + 1 for x in range(1, 30)]
            async with pool.stream(mfuncs.count_up, 5) as items:
                assert [item async for item in items] == list(range(5))
    assert sys.get_asyncgen_hooks() == before


async def test_async_for_takes_the_cheaper_path_of_this_python() -> None:
    # Guards the choice against a silent revert: which path is cheaper per item was
    # measured on each Python (an async generator's step before 3.12; from 3.12 on, a
    # coroutine of ``__anext__``), and both hand out the same items.
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.triple_plus_one, range(10), chunksize=3) as results:
                iterator = aiter(results)
                if sys.version_info >= (3, 12):
                    assert iterator is results
                else:
                    assert iterator is not results
                    assert type(iterator).__name__ == "async_generator"
                first = await anext(iterator)
                assert [first, *[v async for v in results]] == [3 * x + 1 for x in range(10)]


async def test_an_error_ends_every_later_loop() -> None:
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.fail_on, [(x, 3) for x in range(6)], chunksize=2) as results:
                got: list[int] = []

                async def take_all() -> None:
                    async for value in results:
                        got.append(value)

                with pytest.raises(ValueError, match="refusing 3"):
                    await take_all()
                assert results.failed_index == 3
                assert [v async for v in results] == []
    assert got == [mfuncs.fail_on((x, 3)) for x in range(3)]


class _TupleBatches(PickleSerializer):
    """A serializer subclass: its maps travel as BATCHes of argument tuples."""


@pytest.mark.parametrize("serializer", [None, _TupleBatches()], ids=["items", "tuples"])
async def test_a_call_failing_inside_a_chunk_keeps_the_results_before_it(
    serializer: PickleSerializer | None,
) -> None:
    # One chunk of 40: the worker runs its calls in one go; the 23 results before the
    # failing call come back, and the error names the failing item.
    items = [(x, 23) for x in range(40)]
    async with WorkerPool(max_workers=1, serializer=serializer) as pool:
        with anyio.fail_after(HANG_GUARD):
            async with pool.map(mfuncs.fail_on, items, chunksize=40) as results:
                got: list[int] = []

                async def take_all() -> None:
                    async for value in results:
                        got.append(value)

                with pytest.raises(ValueError, match="refusing 23") as caught:
                    await take_all()
                assert results.failed_index == 23
                assert results.completed == 23
    assert got == [10 * x for x in range(23)]
    assert "raised by item 23 of the map" in (getattr(caught.value, "__notes__", None) or [])


async def test_a_list_grown_during_its_map_is_read_as_its_iterator_would() -> None:
    # Chunks of a list are cut by position: items appended before the map reaches the
    # end are mapped too, in order, as the list's own iterator would give them; none
    # is taken twice or skipped. (The order window keeps the map from reading more
    # than a few chunks ahead of the first result, far from the end here.)
    xs = list(range(60))
    async with WorkerPool(max_workers=1) as pool:
        with anyio.fail_after(HANG_GUARD):
            got: list[int] = []
            async with pool.map(mfuncs.triple_plus_one, xs, chunksize=3) as results:
                async for value in results:
                    if not got:
                        xs.extend([100, 101])
                    got.append(value)
    assert got == [3 * x + 1 for x in [*range(60), 100, 101]]
