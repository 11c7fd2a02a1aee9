"""A Ctrl-C on Trio that comes while one of the pool's own background tasks runs.

Trio raises a KeyboardInterrupt in whatever unprotected code runs when SIGINT arrives.
A pool runs tasks of its own that are nobody's call: each worker's output forwarding,
the watch on its exit, the reaping of a killed worker, the idle timer. An interrupt
that ended one of them would leave its work undone (a worker's pipes that its closing
waits for forever, a reaping that a cancelled call waits for forever) and end the
pool's task group with the interrupt. It must reach the program's main task instead,
which may catch it and go on with a pool that still gives right answers.

Each case raises a real SIGINT, once, at the start of one such task, through the
process's own signal handling: no test raises the KeyboardInterrupt itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.procio_scripts import run_script
else:
    from procio_scripts import run_script

SCRIPT = """
import os
import signal
import sys

import anyio
from procio_workers import WorkerPool
from procio_workers._forwarder import OutputForwarder
from procio_workers._pool import WorkerPool as Pool
from procio_workers._process_backend import ProcessWorker

import procio_workers_testfuncs as funcs

WHERE = {
    "forwarder": (OutputForwarder, "run"),
    "output pipe": (OutputForwarder, "_forward"),
    "exit watch": (ProcessWorker, "_watch_exit"),
    "reaper": (Pool, "_finish"),
    "idle timer": (Pool, "_expire_idle"),
    "closing": (ProcessWorker, "aclose"),
}
where = sys.argv[1]
owner, name = WHERE[where]
real = getattr(owner, name)
armed = [] if where == "closing" else [True]


async def interrupted(self, *args):
    if armed:
        armed.pop()
        signal.raise_signal(signal.SIGINT)  # its handler runs here, before this returns
    return await real(self, *args)


setattr(owner, name, interrupted)


async def main():
    if where == "closing":
        await close_interrupted()
        return
    interrupts = 0
    async with WorkerPool(max_workers=1) as pool:
        for round in range(4):
            try:
                if round == 0 and where == "reaper":
                    # A call cancelled with cancellable=True: its worker is killed and
                    # reaped in the background.
                    with anyio.move_on_after(0.5):
                        await pool.run_sync(funcs.sleep_and_pid, 30, cancellable=True)
                got = await pool.run_sync(funcs.echo, round)
                assert got == round, (got, round)
            except KeyboardInterrupt:
                interrupts += 1
        print("interrupts", interrupts)
        print("armed", armed)
        print(await pool.run_sync(funcs.echo, "last"))
        stats = pool.statistics()
        print("busy", stats.busy)
    print("closed")


async def close_interrupted():
    # The pool closes its idle workers in tasks of their own; the interrupt raised at
    # the start of one reaches this task while it waits for them.
    try:
        async with WorkerPool(max_workers=2) as pool:
            pids = set()

            async def call():
                pids.add(await pool.run_sync(funcs.sleep_and_pid, 0.2))

            async with anyio.create_task_group() as tg:
                for _ in range(2):
                    tg.start_soon(call)
            print("workers", len(pids))
            armed.append(True)
    except KeyboardInterrupt:
        print("interrupted while closing")
    print("armed", armed)
    for pid in pids:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            continue
        print("left behind:", pid)
    print("closed", pool.statistics().workers)


anyio.run(main, backend="trio")
"""


TASKS = ["forwarder", "output pipe", "exit watch", "reaper", "idle timer"]


@pytest.mark.parametrize("where", TASKS)
def test_a_ctrl_c_in_a_background_task_reaches_the_main_task(tmp_path: Path, where: str) -> None:
    assert run_script(tmp_path, SCRIPT, where) == [
        "interrupts 1",
        "armed []",
        "last",
        "busy 0",
        "closed",
    ]


def test_a_ctrl_c_while_the_pool_closes_its_workers_comes_out_bare_once_all_are_reaped(
    tmp_path: Path,
) -> None:
    # Not an exception group (which ``except KeyboardInterrupt`` does not catch), and
    # not before every worker has been reaped.
    assert run_script(tmp_path, SCRIPT, "closing") == [
        "workers 2",
        "interrupted while closing",
        "armed []",
        "closed 0",
    ]
