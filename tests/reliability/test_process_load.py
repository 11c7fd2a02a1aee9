"""Load on the process layer: many concurrent spawns, cancelled at random moments.

Each spawn draws one scenario from a seeded generator (a quick command, an exit code,
piped input, a timeout, a child that ignores ``SIGTERM``, a shell whose background
grandchild must die with it...), runs it under a random cancellation deadline where the
scenario allows one, and checks its own outcome exactly. Afterwards nothing may be left:
no child, no zombie, no new file descriptor, and no grandchild that ``signal_tree=True``
promised to stop.
"""

from __future__ import annotations

import math
import random
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest
from anyio import CancelScope, CapacityLimiter, create_task_group, fail_after, move_on_after
from procio_process import CancelPolicy, Process, open_process, run_process
from procio_text import LineReceiveStream

from ._support import LOAD_BACKENDS, LeakGuard, load_count, replay_hint, rng_for, scaled, tally

pytestmark = pytest.mark.anyio

#: Spawns per backend in CI (asyncio and Trio: twice this in all).
SPAWNS = 1000
CONCURRENCY = 16
#: A short grace period, so that children which ignore SIGTERM cost little time.
QUICK_GRACE = CancelPolicy(grace_period=0.05)
#: Seconds before a timeout fires, drawn at random from this range. The scenarios
#: assert that what the child wrote at once is in the TimeoutExpired: on a busy machine
#: (2 cores, 16 spawns in flight, other test runs) starting the child and reaching its
#: first write can take far longer than 0.1 s, so the timeout must leave room for it.
TIMEOUTS = (0.5, 1.5)


@pytest.fixture(params=LOAD_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> Any:
    return request.param


Scenario = Callable[[random.Random, LeakGuard], Awaitable[str]]


async def quick_command(rng: random.Random, guard: LeakGuard) -> str:
    result = await run_process(["true"])
    assert result.returncode == 0
    assert result.stdout == b""
    return "completed"


async def exit_code(rng: random.Random, guard: LeakGuard) -> str:
    code = rng.randrange(1, 120)
    result = await run_process(["sh", "-c", f"exit {code}"], check=False)
    assert result.returncode == code
    return "completed"


async def failing_check(rng: random.Random, guard: LeakGuard) -> str:
    with pytest.raises(subprocess.CalledProcessError) as caught:
        await run_process("echo out; echo err >&2; exit 9")
    assert caught.value.returncode == 9
    assert caught.value.stdout == b"out\n"
    assert caught.value.stderr == b"err\n"
    return "typed error"


async def piped_input(rng: random.Random, guard: LeakGuard) -> str:
    data = rng.randbytes(rng.choice([0, 1, 100, 70_000, 300_000]))
    result = await run_process(["cat"], input=data)
    assert result.stdout == data
    return "completed"


async def cancelled_sleep(rng: random.Random, guard: LeakGuard) -> str:
    policy = rng.choice([CancelPolicy(), CancelPolicy.kill()])
    with move_on_after(rng.uniform(0, 0.02)) as scope:
        await run_process(["sleep", "30"], cancel_policy=policy)
    assert scope.cancelled_caught
    return "cancelled"


async def stubborn_child(rng: random.Random, guard: LeakGuard) -> str:
    # Ignores SIGTERM, so only the SIGKILL after the grace period ends it.
    with move_on_after(rng.uniform(0, 0.02)) as scope:
        await run_process(["sh", "-c", "trap '' TERM; sleep 30"], cancel_policy=QUICK_GRACE)
    assert scope.cancelled_caught
    return "cancelled"


async def timed_out(rng: random.Random, guard: LeakGuard) -> str:
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        await run_process(["sh", "-c", "echo started; sleep 30"], timeout=rng.uniform(*TIMEOUTS))
    assert caught.value.output == b"started\n"
    return "timed out"


async def started_then_cancelled(rng: random.Random, guard: LeakGuard) -> str:
    async with create_task_group() as tg:
        process: Process = await tg.start(run_process, ["sleep", "30"])
        assert process.returncode is None
        await anyio.sleep(rng.uniform(0, 0.01))
        tg.cancel_scope.cancel()
    assert process.returncode is not None
    return "cancelled"


async def open_and_cancel(rng: random.Random, guard: LeakGuard) -> str:
    process: Process | None = None
    with move_on_after(rng.uniform(0, 0.02)) as scope:
        async with await open_process(["cat"], cancel_policy=QUICK_GRACE) as process:
            assert process.stdin is not None
            assert process.stdout is not None
            await process.stdin.send(b"ping")
            assert await process.stdout.receive() == b"ping"
            await process.wait()
    assert scope.cancelled_caught
    if process is None:
        return "cancelled before the spawn"
    assert process.returncode is not None
    return "cancelled"


async def process_tree(rng: random.Random, guard: LeakGuard) -> str:
    """Cancel a shell whose background grandchild must be stopped with it."""
    policy = rng.choice([QUICK_GRACE, CancelPolicy.kill()])
    command = "sleep 30 & echo $!; trap '' TERM; sleep 30"
    with move_on_after(rng.uniform(0, 0.02)) as scope:
        async with await open_process(
            ["sh", "-c", command], signal_tree=True, cancel_policy=policy
        ) as process:
            assert process.stdout is not None
            with CancelScope(shield=True):
                # Learn the grandchild's pid even if the deadline has already passed.
                line = b""
                while not line.endswith(b"\n"):
                    line += await process.stdout.receive()
            guard.promised.add(int(line))
            tally("grandchildren stopped")
            await process.wait()
    assert scope.cancelled_caught
    return "cancelled"


async def lines_of_output(rng: random.Random, guard: LeakGuard) -> str:
    """Read a child's output as lines, cancelled at a random moment or not at all."""
    count = rng.randrange(1, 3000)
    deadline = rng.choice([0.005, 0.02, math.inf])
    received: list[str] = []
    with move_on_after(deadline) as scope:
        async with await open_process(["seq", str(count)]) as process:
            assert process.stdout is not None
            async for line in LineReceiveStream(process.stdout, max_line_length=20):
                received.append(line)
    # Whatever arrived is the start of the output, in order, nothing torn.
    assert received == [str(n) for n in range(1, len(received) + 1)]
    if scope.cancelled_caught:
        return "cancelled"
    assert len(received) == count
    return "completed"


async def stubborn_descendants(rng: random.Random, guard: LeakGuard) -> str:
    """The child exits on SIGTERM, but a grandchild and a great-grandchild ignore it:
    only the SIGKILL to the group after the grace period stops them."""
    command = (
        "(trap '' TERM; sleep 30 & echo $!; (trap '' TERM; exec sleep 30) & echo $!; wait) & "
        "exec sleep 30"
    )
    with move_on_after(rng.uniform(0, 0.02)) as scope:
        async with await open_process(
            ["sh", "-c", command], signal_tree=True, cancel_policy=QUICK_GRACE
        ) as process:
            assert process.stdout is not None
            with CancelScope(shield=True):
                text = b""
                while text.count(b"\n") < 2:
                    text += await process.stdout.receive()
            guard.promised.update(int(pid) for pid in text.split())
            tally("grandchildren stopped", 2)
            await process.wait()
    assert scope.cancelled_caught
    return "cancelled"


async def orphan_holding_the_pipe(rng: random.Random, guard: LeakGuard) -> str:
    """The child exits at once, but its background child keeps stdout open: the
    timeout must fire, and with signal_tree=True that grandchild must be stopped."""
    with pytest.raises(subprocess.TimeoutExpired) as caught:
        await run_process(
            ["sh", "-c", "sleep 30 & echo $!"],
            signal_tree=True,
            timeout=rng.uniform(*TIMEOUTS),
            cancel_policy=rng.choice([QUICK_GRACE, CancelPolicy.kill()]),
        )
    output = caught.value.output
    assert isinstance(output, bytes)
    guard.promised.add(int(output))
    tally("grandchildren stopped")
    return "timed out"


SCENARIOS: list[Scenario] = [
    quick_command,
    quick_command,
    exit_code,
    failing_check,
    piped_input,
    cancelled_sleep,
    cancelled_sleep,
    stubborn_child,
    timed_out,
    started_then_cancelled,
    open_and_cancel,
    process_tree,
    stubborn_descendants,
    orphan_holding_the_pipe,
    lines_of_output,
]


async def test_spawns_under_random_cancellation_leave_nothing_behind(
    anyio_backend: Any, request: pytest.FixtureRequest
) -> None:
    rng = rng_for(request.node.name)
    guard = LeakGuard(request.node.name)
    limiter = CapacityLimiter(CONCURRENCY)
    count = load_count("spawns", SPAWNS)
    outcomes: Counter[str] = Counter()
    failures: list[str] = []

    async def one(index: int, scenario: Scenario, seed: int) -> None:
        async with limiter:
            try:
                outcomes[await scenario(random.Random(seed), guard)] += 1
            except Exception as exc:  # collected, so one report names every failure
                failures.append(f"spawn {index} ({scenario.__name__}): {exc!r}")

    with fail_after(50 * max(1.0, count / SPAWNS)):  # a stuck task fails the test
        async with create_task_group() as tg:
            for index in range(count):
                tg.start_soon(one, index, rng.choice(SCENARIOS), rng.randrange(2**32))

    assert not failures, f"{len(failures)} spawns failed: {failures[:5]}; {replay_hint()}"
    assert sum(outcomes.values()) == count, replay_hint()
    assert outcomes["cancelled"] > 0, replay_hint()
    guard.check()
    tally("spawns", count)
    tally("spawns cancelled", outcomes["cancelled"])
    tally("spawns timed out", outcomes["timed out"])


async def test_cancelled_before_the_spawn_starts_nothing(
    anyio_backend: Any, request: pytest.FixtureRequest
) -> None:
    guard = LeakGuard(request.node.name)
    count = scaled(50)
    for _ in range(count):
        with CancelScope() as scope:
            scope.cancel()
            await open_process(["sleep", "30"])
            pytest.fail("open_process went on under a cancelled scope")
        with CancelScope() as scope:
            scope.cancel()
            await run_process(["sleep", "30"])
            pytest.fail("run_process went on under a cancelled scope")
    guard.check()
    tally("spawns cancelled before starting", 2 * count)
