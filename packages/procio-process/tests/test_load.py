"""Hundreds of spawns with random cancellation leave no zombie, no child and no fd."""

from __future__ import annotations

import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest
from procio_process import CancelPolicy, open_process, run_process

pytestmark = pytest.mark.anyio

StartGuard = Callable[[], Callable[[], None]]

HAS_PROC = sys.platform == "linux"
SPAWNS = 500
CONCURRENCY = 24


async def one_run(rng: random.Random, counts: dict[str, int], groups_file: Path) -> None:
    """Start one child in one of several ways, and maybe cancel it at a random moment."""
    kind = rng.choice(["run", "run-input", "open-read", "open-wait", "tree"])
    sleep = f"{rng.uniform(0, 0.05):.3f}"
    # A cancel delay of 0 hits the spawn itself; others land while reading or waiting.
    cancel_after = rng.choice([None, 0.0, rng.uniform(0, 0.06)])
    if kind == "tree":
        # Its grandchild would run for 30 s: only the cancellation may end it.
        cancel_after = rng.uniform(0, 0.06)
    policy = rng.choice([CancelPolicy(grace_period=1), CancelPolicy.kill()])
    with anyio.CancelScope() as scope:
        if cancel_after is not None:
            scope.deadline = anyio.current_time() + cancel_after
        if kind == "run":
            await run_process(["sleep", sleep], cancel_policy=policy)
        elif kind == "run-input":
            result = await run_process(["cat"], input=b"x" * rng.randrange(200_000))
            assert result.returncode == 0
        elif kind == "open-read":
            async with await open_process(
                f"sleep {sleep}; echo done", cancel_policy=policy
            ) as process:
                assert process.stdout is not None
                async for _ in process.stdout:
                    pass
        elif kind == "open-wait":
            async with await open_process(["sleep", sleep], cancel_policy=policy) as process:
                await process.wait()
        else:
            # The shell records its process group (its own pid) before starting the
            # grandchild that the cancellation must reach.
            await run_process(
                f"echo $$ >> {groups_file}; sleep 30 & sleep {sleep}; wait",
                signal_tree=True,
                cancel_policy=policy,
            )
    counts["cancelled" if scope.cancelled_caught else "finished"] += 1


@pytest.mark.slow
async def test_hundreds_of_spawns_with_random_cancellation_leak_nothing(
    leak_guard: StartGuard,
    list_children: Callable[[], dict[int, str]],
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    check = leak_guard()
    rng = random.Random(20261126)
    groups_file = tmp_path / "groups"
    counts = {"cancelled": 0, "finished": 0}
    limiter = anyio.CapacityLimiter(CONCURRENCY)

    async def guarded() -> None:
        async with limiter:
            await one_run(rng, counts, groups_file)

    with anyio.fail_after(50):
        async with anyio.create_task_group() as tg:
            for _ in range(SPAWNS):
                tg.start_soon(guarded)

    assert counts["cancelled"] + counts["finished"] == SPAWNS
    # Both paths were exercised many times.
    assert counts["cancelled"] > SPAWNS // 10
    assert counts["finished"] > SPAWNS // 10
    # The guard fails on any child left, zombie or running; name the zombies first.
    zombies = [pid for pid, state in list_children().items() if state == "Z"]
    assert zombies == []
    check()
    if HAS_PROC:
        # Every process tree was cancelled: none of their 30 s grandchildren still runs.
        group_members: Callable[[int], list[int]] = request.getfixturevalue("group_members")
        groups = [int(line) for line in read_text(groups_file).split()]
        assert len(groups) > 10
        leftovers = {pgid: members for pgid in groups if (members := group_members(pgid))}
        assert leftovers == {}


async def test_spawning_does_not_leak_when_the_spawn_itself_fails_repeatedly(
    leak_guard: StartGuard,
) -> None:
    check = leak_guard()
    for _ in range(50):
        with pytest.raises(FileNotFoundError):
            await run_process(["/no/such/program"])
        with pytest.raises(subprocess.CalledProcessError):
            await run_process(["false"], stdout=None)
    check()


def read_text(path: Path) -> str:
    return path.read_text() if path.exists() else ""
