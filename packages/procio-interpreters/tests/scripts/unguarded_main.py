"""Starts interpreter workers when imported, with no ``__main__`` guard."""

import anyio
from procio_interpreters import InterpreterBackend
from procio_workers import WorkerPool


def double(value: int) -> int:
    return value * 2


async def main() -> None:
    async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
        print(await pool.run_sync(double, 21))


anyio.run(main)
