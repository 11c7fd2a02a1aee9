"""The benchmark harness's rounds: every contender once a round, in orders that mix.

A contender measured right after another inherits what that one leaves behind (busy
workers, garbage, a cold cache): if one contender always came right after the same
other one, its samples would carry that neighbour's leftovers in every round.
"""

from __future__ import annotations

import importlib
import sys
from collections import defaultdict
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
harness: Any = importlib.import_module("_harness")


def _orders(count: int, contenders: list[str]) -> list[list[str]]:
    orders: list[list[str]] = [[] for _ in range(count)]
    for index, name in harness.rounds(count, contenders):
        orders[index].append(name)
    return orders


@pytest.mark.parametrize("size", range(1, 9))
@pytest.mark.parametrize("count", [1, 2, 5, 7, 9])
def test_every_round_has_every_contender_once(size: int, count: int) -> None:
    contenders = [f"c{i}" for i in range(size)]
    orders = _orders(count, contenders)
    assert len(orders) == count
    for order in orders:
        assert sorted(order) == sorted(contenders)


@pytest.mark.parametrize("size", range(3, 9))
@pytest.mark.parametrize("count", [5, 7, 9])
def test_no_contender_always_comes_right_after_the_same_one(size: int, count: int) -> None:
    contenders = [f"c{i}" for i in range(size)]
    before: dict[str, set[str]] = defaultdict(set)
    for order in _orders(count, contenders):
        for previous, name in pairwise(order):
            before[name].add(previous)
    for name in contenders:
        assert len(before[name]) >= 2, f"{name} always came right after {before[name]}"


@pytest.mark.parametrize("count", [5, 7, 9])
def test_two_contenders_take_turns_at_going_first(count: int) -> None:
    firsts = {order[0] for order in _orders(count, ["a", "b"])}
    assert firsts == {"a", "b"}
