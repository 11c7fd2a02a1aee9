"""One cold start sample, run as the ``__main__`` of a fresh interpreter by bench_workers.

    python benchmarks/_cold.py CONTENDER

prints the milliseconds from opening a fresh event loop (or executor) to the first
result of ``f(x) = x``, pool start included. This module is the *trivial* ``__main__``:
at import time it imports only ``sys``, so a library that imports the parent's main
module in its workers (AnyIO does, eagerly; ``ProcessPoolExecutor`` with the spawn and
forkserver methods does; procio does only when a call needs it) pays nothing for it.
``_cold_heavy.py`` is the same with a heavy import at the top.
"""

from __future__ import annotations

import sys


def _measure(contender: str) -> float:
    # Every import happens here, before the clock starts and only in the parent.
    import concurrent.futures
    import copy
    import importlib
    import multiprocessing
    import subprocess
    import time
    from typing import Any

    import anyio
    import anyio.to_process
    from procio_workers import to_process

    func = copy.copy
    if contender == "floor":
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        return time.perf_counter() - start

    if contender in ("procio", "anyio", "procio-trio"):
        run: Any = anyio.to_process.run_sync if contender == "anyio" else to_process.run_sync

        async def first() -> None:
            await run(func, 1)

        backend = "trio" if contender == "procio-trio" else "asyncio"
        start = time.perf_counter()
        anyio.run(first, backend=backend)
        return time.perf_counter() - start

    if contender == "trio-parallel":
        import trio

        trio_parallel: Any = importlib.import_module("trio_parallel")

        async def first_trio() -> None:
            async with trio_parallel.open_worker_context() as ctx:
                await ctx.run_sync(func, 1)

        start = time.perf_counter()
        trio.run(first_trio)
        return time.perf_counter() - start

    if contender == "loky":
        loky: Any = importlib.import_module("loky")
        start = time.perf_counter()
        with loky.ProcessPoolExecutor(1) as executor:
            executor.submit(func, 1).result()
        return time.perf_counter() - start

    method = contender.removeprefix("ProcessPoolExecutor-")
    context = multiprocessing.get_context(method)
    start = time.perf_counter()
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as pool:
        pool.submit(func, 1).result()
    return time.perf_counter() - start


def main() -> None:
    """Print one sample, in milliseconds, for the contender named on the command line."""
    print(f"{_measure(sys.argv[1]) * 1e3:.6f}")


if __name__ == "__main__":
    main()
