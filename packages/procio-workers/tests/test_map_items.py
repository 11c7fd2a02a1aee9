"""Chunks of a map as BATCHes of items (the feature ``"items"``).

A map calls a one-argument function, so a worker that lists ``"items"`` gets each chunk
as the triple ``(function, items, 1)``: each item is the one argument, even a tuple, and
no argument tuple per item is built or pickled. Workers without the feature, and
serializers that cannot write the triple, still get argument tuples; the answers,
indexes of failing items included, are the same either way.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import pytest
from procio_workers import (
    MapResults,
    PickleSerializer,
    ProcessBackend,
    WorkerPool,
    _wire,
    testing,
)
from procio_workers._process_backend import ProcessWorker, _Items
from procio_workers.abc import Buffer, Launcher

if TYPE_CHECKING:
    from tests import procio_map_testfuncs as mfuncs
else:
    import procio_map_testfuncs as mfuncs

pytestmark = pytest.mark.anyio

#: Turns a hang into a failure; no test relies on it for its verdict.
HANG_GUARD = 45

PAGE = Path(__file__).resolve().parents[3] / "docs" / "protocol.md"

# procio's worker program as a worker from before the feature: it does not list "items"
# and, as such a worker did, unpacks every BATCH as a pair (a triple is an ERROR).
_WITHOUT_ITEMS = """
import sys, importlib.util as u
spec = u.spec_from_file_location("_procio_worker", sys.argv[1])
worker = u.module_from_spec(spec)
sys.modules["_procio_worker"] = worker
spec.loader.exec_module(worker)
worker.FEATURES.remove("items")

def read_pair(codec, frame):
    func, calls = codec.loads(frame.segments)
    return func, calls, False

worker._read_batch = read_pair
sys.exit(worker.main(sys.argv[2:]))
"""

# procio's worker program with the feature spoilt: it lists "items" but spreads each
# item as the arguments of its call.
_SPREADS_ITEMS = """
import sys, importlib.util as u
spec = u.spec_from_file_location("_procio_worker", sys.argv[1])
worker = u.module_from_spec(spec)
sys.modules["_procio_worker"] = worker
spec.loader.exec_module(worker)
read = worker._read_batch

def spread(codec, frame):
    func, calls, one = read(codec, frame)
    if one:
        calls = [item if isinstance(item, tuple) else (item,) for item in calls]
    return func, calls, False

worker._read_batch = spread
sys.exit(worker.main(sys.argv[2:]))
"""


class _ProgramLauncher(Launcher):
    def __init__(self, program: str) -> None:
        self.program = program

    def command(self, argv: Sequence[str]) -> list[str]:
        return [sys.executable, "-c", self.program, testing.python_worker_command()[-1], *argv[-2:]]


class _CountingSerializer(PickleSerializer):
    """A serializer of its own: its dump_call must see every chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.chunks = 0

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        if type(args) is not tuple:  # a chunk: the list of its argument tuples
            self.chunks += 1
        return super().dump_call(func, args)


async def collect(results: MapResults[int], into: list[int]) -> None:
    async with results:
        async for value in results:
            into.append(value)


def workers(pool: WorkerPool) -> list[ProcessWorker]:
    return [slot.worker for slot in pool._slots if isinstance(slot.worker, ProcessWorker)]


async def test_a_tuple_item_is_one_argument_in_a_batch_of_items() -> None:
    async with ProcessBackend() as backend:
        worker = await backend.start_worker({})
        assert isinstance(worker, ProcessWorker)
        try:
            assert worker.takes_items
            request = backend._prepare_items(len, [(1, 2), "abc", [], (4,)])
            assert isinstance(request, _Items)
            with anyio.fail_after(HANG_GUARD):
                await worker.send_batch(request)
                assert await worker.receive_batch() == [2, 3, 0, 1]
        finally:
            worker.kill()
            await worker.aclose()


async def test_a_map_of_tuples_gives_each_tuple_whole() -> None:
    items = [(i, i + 1) for i in range(3000)] + [(), ("a", "b", "c")]
    async with WorkerPool(max_workers=2) as pool:
        with anyio.fail_after(HANG_GUARD):
            got = [n async for n in pool.map(len, items)]
        assert got == [len(item) for item in items]
        assert all(worker.takes_items for worker in workers(pool))


async def test_an_item_that_raises_in_a_batch_of_items_is_named() -> None:
    items = [str(i) for i in range(500)]
    items[321] = "not a number"
    got: list[int] = []
    async with WorkerPool(max_workers=2) as pool:
        results = pool.map(int, items, chunksize=100)
        with anyio.fail_after(HANG_GUARD), pytest.raises(ValueError) as caught:
            await collect(results, got)
        assert results.failed_index == 321
        assert got == list(range(321))
        assert "raised by item 321 of the map" in getattr(caught.value, "__notes__", [])
        assert pool.statistics().broken == 0


async def test_a_worker_without_the_feature_gets_argument_tuples() -> None:
    # Were a triple sent to it, every chunk would come back as an ERROR of stage
    # "arguments" and the map would raise.
    items = [(i, "x" * (i % 5)) for i in range(400)] + [()]
    async with WorkerPool(max_workers=2, launcher=_ProgramLauncher(_WITHOUT_ITEMS)) as pool:
        with anyio.fail_after(HANG_GUARD):
            got = [n async for n in pool.map(len, items)]
            assert got == [len(item) for item in items]
            assert not any(worker.takes_items for worker in workers(pool))
            assert workers(pool)
            stats = pool.statistics()
            assert (stats.failures, stats.broken) == (0, 0)


async def test_a_serializer_of_its_own_writes_every_chunk() -> None:
    serializer = _CountingSerializer()
    assert serializer._dump_items(len, [1]) is None
    async with WorkerPool(max_workers=2, serializer=serializer) as pool:
        with anyio.fail_after(HANG_GUARD):
            got = [y async for y in pool.map(mfuncs.triple_plus_one, range(300), chunksize=50)]
    assert got == [3 * x + 1 for x in range(300)]
    assert serializer.chunks == 6


async def test_the_protocol_page_example_of_a_batch_of_items_runs() -> None:
    if not PAGE.exists():
        pytest.skip("the documentation is not beside this checkout")
    text = PAGE.read_text(encoding="utf-8")
    found = re.search(r"<!-- frame: kind=8 count=1 segments=([0-9a-f]+) -->", text)
    assert found is not None
    segment = bytes.fromhex(found.group(1))
    assert _wire.PickleCodec().loads([segment]) == (len, [(1, 2), "ab"], 1)
    async with ProcessBackend() as backend:
        worker = await backend.start_worker({})
        assert isinstance(worker, ProcessWorker)
        try:
            with anyio.fail_after(HANG_GUARD):
                await worker.send_batch(_Items(_wire.encode_frame(_wire.BATCH, [segment])))
                assert await worker.receive_batch() == [2, 2]
        finally:
            worker.kill()
            await worker.aclose()


async def test_the_kit_catches_a_worker_that_spreads_items_as_arguments() -> None:
    command = [sys.executable, "-c", _SPREADS_ITEMS, testing.python_worker_command()[-1]]
    with pytest.raises(AssertionError, match="each item is ONE argument"):
        await testing.check_worker_command(command, timeout=10.0)


async def test_the_kit_passes_a_worker_without_the_feature() -> None:
    command = [sys.executable, "-c", _WITHOUT_ITEMS, testing.python_worker_command()[-1]]
    await testing.check_worker_command(command, timeout=10.0)
