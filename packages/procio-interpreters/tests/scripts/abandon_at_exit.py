"""Run as a script: a cancellable call is abandoned, the pool closes at once, and the
process ends only after the call has finished in its interpreter."""

import sys
import time
from pathlib import Path

import anyio
from procio_interpreters import InterpreterBackend
from procio_workers import WorkerPool


def sleep_then_touch(seconds: float, path: str) -> None:
    time.sleep(seconds)
    Path(path).touch()


async def main(path: str) -> None:
    async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
        with anyio.move_on_after(0.5):
            await pool.run_sync(sleep_then_touch, 2.0, path, cancellable=True)
    # The pool has closed; the call still runs.
    print("closed", await anyio.Path(path).exists())


if __name__ == "__main__":
    anyio.run(main, sys.argv[2], backend=sys.argv[1])
