"""One cold start sample, run as the ``__main__`` of a fresh interpreter by bench_workers.

    python benchmarks/_cold.py CONTENDER

prints the milliseconds from a fresh event loop's first moment (or from opening an
executor) to the first result of ``f(x) = x``, pool start included. The clock starts
inside the running loop, since starting the loop (importing its backend) costs the
same whatever runs on it, and stops when the result is in the caller's hands, before
the loop or the executor is closed (closing is not part of a cold start, and each
library closes its workers in its own way). This module is the *trivial* ``__main__``:
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

        async def first() -> float:
            # The clock starts in the running loop: anyio.run() imports its backend
            # (Trio alone takes longer than a worker's start), which is the event
            # loop's cost, the same whatever runs on it.
            start = time.perf_counter()
            await run(func, 1)
            return time.perf_counter() - start

        backend = "trio" if contender == "procio-trio" else "asyncio"
        return float(anyio.run(first, backend=backend))

    if contender == "trio-parallel":
        import trio

        trio_parallel: Any = importlib.import_module("trio_parallel")

        async def first_trio() -> float:
            start = time.perf_counter()
            async with trio_parallel.open_worker_context() as ctx:
                await ctx.run_sync(func, 1)
                return time.perf_counter() - start

        return float(trio.run(first_trio))

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
