"""Run as a script: a function of this main module runs in a subinterpreter, and a
child process started meanwhile (fork and exec) does not disturb the workers."""

import subprocess
import sys

import anyio
from procio_interpreters import InterpreterBackend
from procio_workers import WorkerPool


def from_main(value: int) -> str:
    if sys.version_info >= (3, 13):
        import _interpreters

        return f"{value * 2} in interpreter {_interpreters.get_current()[0]}"
    raise RuntimeError("no subinterpreters before Python 3.13")


async def main() -> None:
    async with WorkerPool(backend=InterpreterBackend(), max_workers=1) as pool:
        first = await pool.run_sync(from_main, 21)
        # subprocess forks and execs at once, without running Python in the child.
        child = subprocess.run(  # noqa: ASYNC221 - a blocking start is the point here
            [sys.executable, "-c", "print('child')"], capture_output=True, check=True
        )
        assert child.stdout == b"child\n", child
        again = await pool.run_sync(from_main, 21)
        print(first)
        print(again)


if __name__ == "__main__":
    anyio.run(main, backend=sys.argv[1])
