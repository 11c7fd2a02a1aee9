"""``python -m procio``: a short live tour of what procio does on this machine."""

from __future__ import annotations

import sys

import anyio

from procio import LineReceiveStream, TextReceiveStream

_CHILD = (
    "import sys, time\n"
    "for i in range(1, 6):\n"
    "    sys.stdout.write(f'step {i}/5: caf\\u00e9 \\u2713\\r\\n' if i % 2 else f'step {i}/5\\n')\n"
    "    sys.stdout.flush()\n"
    "    time.sleep(0.05)\n"
    "sys.stdout.buffer.write('no newline at the end: \\u00e9'.encode()[:-1])\n"
)


def _say(text: str) -> None:
    print(text, flush=True)


async def _lines_demo() -> None:
    _say("1. A child's output, decoded and framed into lines as it arrives")
    _say("   (CRLF and LF endings mixed, and a last line cut inside a UTF-8 character):")
    command = [sys.executable, "-c", _CHILD]
    async with await anyio.open_process(command, stdin=None, stderr=None) as process:
        assert process.stdout is not None
        lines = LineReceiveStream(process.stdout, errors="replace")
        async for line in lines:
            _say(f"   line: {line!r}")


async def _decode_demo() -> None:
    _say("2. The same bytes through TextReceiveStream with errors='strict':")
    command = [sys.executable, "-c", "import sys; sys.stdout.buffer.write(b'ok \\xc3')"]
    async with await anyio.open_process(command, stdin=None, stderr=None) as process:
        assert process.stdout is not None
        try:
            async for text in TextReceiveStream(process.stdout):
                _say(f"   text: {text!r}")
        except UnicodeDecodeError as error:
            _say(f"   UnicodeDecodeError at the end of the stream: {error.reason}")


async def _main() -> None:
    _say("procio demo\n")
    await _lines_demo()
    _say("")
    await _decode_demo()


def main() -> None:
    """Run the demo on the default backend (asyncio), or Trio with ``--trio``."""
    backend = "trio" if "--trio" in sys.argv[1:] else "asyncio"
    anyio.run(_main, backend=backend)


if __name__ == "__main__":
    main()
