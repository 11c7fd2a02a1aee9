"""The many-tasks benchmark samples its slowest map contenders in rounds of their own.

AnyIO's map (one task per item, 20,000 of them) and joblib's last many times longer
than the other contenders' and load the whole process while they run. A sample taken
right after one of theirs ran slower for the executors than for procio, which raised
procio's ratio to them: so those two are sampled after every round of the others, in
rounds of their own, still in the same run.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
bench_map: Any = importlib.import_module("bench_map")
harness: Any = importlib.import_module("_harness")


class _Portal:
    def call(self, func: Callable[..., Awaitable[Any]], *args: Any) -> Any:
        return anyio.run(func, *args)


def _logging(log: list[str], name: str, result: Callable[..., Any]) -> Any:
    async def contender(*args: Any) -> Any:
        log.append(name)
        return result(*args)

    return contender


def test_anyio_is_sampled_after_every_round_of_the_others(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    log: list[str] = []
    monkeypatch.setattr(bench_map, "_have", lambda module: False)  # no loky, no joblib
    monkeypatch.setattr(
        bench_map, "_procio_map", _logging(log, "procio", lambda p, f, xs: [f(x) for x in xs])
    )
    monkeypatch.setattr(
        bench_map, "_anyio_map", _logging(log, "anyio", lambda f, xs: [f(x) for x in xs])
    )
    monkeypatch.setattr(bench_map, "_async_for_bound", _logging(log, "bound", list))
    loop = bench_map.Loop.__new__(bench_map.Loop)  # no thread, no pool: the fakes need none
    loop.portal = _Portal()
    loop.pool = None
    repeats = 4
    with bench_map.contextlib.ExitStack() as stack:
        rows = bench_map.map_tiny_rows(stack, loop, repeats, 8)
    # One untimed warm-up each, then the timed rounds.
    timed = log[3:]
    assert sorted(log[:3]) == ["anyio", "bound", "procio"]
    assert timed.count("anyio") == timed.count("procio") == timed.count("bound") == repeats
    last_other = max(i for i, name in enumerate(timed) if name != "anyio")
    first_anyio = timed.index("anyio")
    assert first_anyio > last_other, timed
    assert all(len(row.samples) == repeats for row in rows)


@pytest.mark.parametrize("count", [1, 3, 7])
def test_groups_are_sampled_one_after_the_other_each_in_its_own_rounds(count: int) -> None:
    groups = [["a", "b", "c"], ["x", "y"]]
    order = list(harness.rounds_in_groups(count, groups))
    first = order[: count * 3]
    second = order[count * 3 :]
    assert first == list(harness.rounds(count, groups[0]))
    assert second == list(harness.rounds(count, groups[1]))


def test_an_empty_group_is_sampled_in_no_round() -> None:
    assert list(harness.rounds_in_groups(2, [["a"], []])) == list(harness.rounds(2, ["a"]))
