"""procio-dask on a local two-worker Dask cluster, beside the local procio pool.

Rows (one run, on asyncio; every contender keeps two workers):

* worker round trip ``f(x) = x``, sequential, in calls per second: a ``WorkerPool`` on
  ``DaskBackend`` over a ``LocalCluster`` of two single-threaded worker processes on
  127.0.0.1; Dask's own client used directly (``submit`` then ``result``, blocking, no
  event loop: what procio-dask adds to Dask is the difference); procio's local
  ``WorkerPool``; AnyIO's ``to_process``;
* a 32 MiB ``bytes`` argument echoed back, in MB/s counting the bytes both ways, by the
  same contenders (Dask directly scatters the argument first, as procio-dask does).

A cluster on one machine pays Dask's scheduler and TCP hops without the benefit of
more machines: these rows show what the cluster path costs, not what it is for. They
form a group of their own, apart from the chart of procio against AnyIO.
"""

# distributed leaves Client, LocalCluster and Client.scatter unannotated.
# mypy: disable-error-code="no-untyped-call"

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.to_process
from _harness import Row, parser, report, rounds
from distributed import Client, LocalCluster
from procio_dask import DaskBackend
from procio_workers import WorkerPool

ROUND_TRIP = "worker round trip f(x) = x, sequential, 2 workers (dask bench)"
ECHO = "{} MiB bytes argument echoed back, 2 workers (dask bench)"


async def _rate(call: Callable[[], Awaitable[object]], count: int) -> float:
    """Calls per second of *count* sequential awaits of *call*, after one warm-up call."""
    await call()  # warm up: workers started, modules imported
    start = time.perf_counter()
    for _ in range(count):
        await call()
    return count / (time.perf_counter() - start)


def _blocking_rate(call: Callable[[], object], count: int) -> float:
    call()
    start = time.perf_counter()
    for _ in range(count):
        call()
    return count / (time.perf_counter() - start)


async def _pool_figures(
    pool: WorkerPool, payload: bytes, count: int, echoes: int
) -> tuple[float, float]:
    async def trip() -> object:
        return await pool.run_sync(int, 7)

    async def echo() -> object:
        return await pool.run_sync(bytes, payload)

    calls = await _rate(trip, count)
    mbs = await _rate(echo, echoes) * 2 * len(payload) / 1e6
    return calls, mbs


async def _dask_pool(address: str, payload: bytes, count: int, echoes: int) -> Any:
    async with WorkerPool(max_workers=2, backend=DaskBackend(address)) as pool:
        return await _pool_figures(pool, payload, count, echoes)


async def _local_pool(payload: bytes, count: int, echoes: int) -> Any:
    async with WorkerPool(max_workers=2) as pool:
        return await _pool_figures(pool, payload, count, echoes)


async def _anyio(payload: bytes, count: int, echoes: int) -> tuple[float, float]:
    limiter = anyio.CapacityLimiter(2)

    async def trip() -> object:
        return await anyio.to_process.run_sync(int, 7, limiter=limiter)

    async def echo() -> object:
        return await anyio.to_process.run_sync(bytes, payload, limiter=limiter)

    calls = await _rate(trip, count)
    mbs = await _rate(echo, echoes) * 2 * len(payload) / 1e6
    return calls, mbs


def _dask_direct(client: Client, payload: bytes, count: int, echoes: int) -> tuple[float, float]:
    def trip() -> object:
        return client.submit(int, 7, pure=False).result()

    def echo() -> object:
        scattered = client.scatter(payload, hash=False)
        result = client.submit(bytes, scattered, pure=False).result()
        scattered.release()
        return result

    calls = _blocking_rate(trip, count)
    mbs = _blocking_rate(echo, echoes) * 2 * len(payload) / 1e6
    return calls, mbs


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    size = (1 << 20) if args.quick else (32 << 20)
    count, echoes, repeats = (20, 2, 2) if args.quick else (200, 5, 3)
    payload = b"\xa5" * size
    # A worker restart or a slow heartbeat would be logged on every line otherwise.
    logging.getLogger("distributed").setLevel(logging.ERROR)
    names = {
        "dask": ("procio-dask: WorkerPool on DaskBackend", "subject"),
        "direct": ("floor: Dask client directly", "floor"),
        "local": ("procio: local WorkerPool", "other"),
        "anyio": ("anyio: to_process", "anyio"),
    }
    rows = {
        (key, index): Row(figure, title, "dask", name, role, unit, higher_is_better=True)
        for key, (name, role) in names.items()
        for index, (figure, title, unit) in enumerate(
            (
                ("dask-round-trip", ROUND_TRIP, "calls/s"),
                ("dask-echo", ECHO.format(size >> 20), "MB/s"),
            )
        )
    }
    rows["dask", 0].note = (
        "A local two-worker Dask cluster pays the scheduler's and TCP's hops without the "
        "benefit of more machines: these rows show what the cluster path costs."
    )
    rows["dask", 1].note = "MB/s counts the bytes of both directions."
    with LocalCluster(
        n_workers=2,
        processes=True,
        threads_per_worker=1,
        host="127.0.0.1",
        # The scheduler always serves HTTP (health, metrics); None would still mean
        # port 8787, which another cluster on this machine may hold.
        dashboard_address="127.0.0.1:0",
    ) as cluster:
        address = str(cluster.scheduler_address)
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2)
            # Interleaved rounds (see _harness.rounds); a sample is one pass of each
            # contender. The local contenders make 5 times as many calls per pass, so
            # that their samples last about as long as Dask's.
            for _, key in rounds(repeats, list(names)):
                if key == "direct":
                    figures = _dask_direct(client, payload, count, echoes)
                elif key == "dask":
                    figures = anyio.run(_dask_pool, address, payload, count, echoes)
                elif key == "local":
                    figures = anyio.run(_local_pool, payload, count * 5, echoes * 4)
                else:
                    figures = anyio.run(_anyio, payload, count * 5, echoes * 4)
                for index, value in enumerate(figures):
                    rows[key, index].samples.append(value)
    report(sorted(rows.values(), key=lambda row: row.figure, reverse=True), args.json)


if __name__ == "__main__":
    main()
