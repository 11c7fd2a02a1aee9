"""Decoding and line framing of real process output: procio beside AnyIO and the floor.

Rows (one run, on asyncio). The child is ``yes LINE | head -c N``: C programs writing
large blocks, so that the child is never the bottleneck and the figures are the reader's.

* decoding ASCII and mixed UTF-8 output of a child process to ``str``: procio's
  ``open_process`` + ``TextReceiveStream``, AnyIO's ``open_process`` +
  ``TextReceiveStream``, AnyIO's process with procio's ``TextReceiveStream`` (the text
  layer alone), and the floor: the same child read with blocking ``os.read`` calls of
  64 KiB, each fed to an incremental decoder (the pipe is part of the work: a floor
  that decodes bytes already in memory would leave it out);
* line framing: procio's ``LineReceiveStream``, AnyIO's ``BufferedByteReceiveStream.
  receive_until`` (AnyIO's nearest tool), and ``asyncio.StreamReader.readline``;
* one long line arriving a byte at a time, in memory, at two lengths: the cost per
  character of ``LineReceiveStream`` must not grow with the line (linear assembly).

Each async sample runs in an event loop of its own (``anyio.run``) and is timed inside it:
opening and closing the loop is left out, as the blocking floor has none. Every
contender of a figure is sampled in interleaved rounds (see ``_harness``). To add
a row, add a ``(name, role, function)`` entry to the figure's tuple in ``main``.
"""

from __future__ import annotations

import asyncio
import codecs
import os
import shlex
import subprocess
import time
from collections.abc import Awaitable, Callable
from functools import partial

import anyio
import anyio.streams.text
import procio_process
import procio_text
from _harness import Row, parser, report, rounds, timed_in_loop
from anyio.abc import ByteReceiveStream, ObjectReceiveStream, Process
from anyio.streams.buffered import BufferedByteReceiveStream

ASCII_LINE = b"2026-11-26 12:00:00 INFO worker-3 handled request id=1234567 in 0.42 ms\n"
UTF8_LINE = "2026-11-26 journal: café ✓ naïve 漢字 résumé ok — done 🚀\n".encode()


def _child(line: bytes, total: int) -> list[str]:
    # `yes | head -c` writes the same line over and over, in large blocks, from C: the
    # child is never the bottleneck, so the figures are the reader's. The total is a
    # whole number of lines, so that no character is cut at the end.
    assert line.endswith(b"\n")
    total -= total % len(line)
    text = line[:-1].decode()
    return ["sh", "-c", f"yes {shlex.quote(text)} | head -c {total}"]


async def _decode(
    open_process: Callable[..., Awaitable[Process]],
    text_stream: Callable[[ByteReceiveStream], ObjectReceiveStream[str]],
    command: list[str],
) -> int:
    count = 0
    async with await open_process(command, stdin=None, stderr=None) as process:
        assert process.stdout is not None
        async for text in text_stream(process.stdout):
            count += len(text)
    return count


Decoder = Callable[[list[str]], Awaitable[int]]
_procio_decode: Decoder = partial(
    _decode, procio_process.open_process, procio_text.TextReceiveStream
)
_anyio_decode: Decoder = partial(_decode, anyio.open_process, anyio.streams.text.TextReceiveStream)
# procio's text layer alone, over AnyIO's process streams.
_mixed_decode: Decoder = partial(_decode, anyio.open_process, procio_text.TextReceiveStream)


async def _procio_lines(command: list[str]) -> int:
    count = 0
    async with await procio_process.open_process(command, stdin=None, stderr=None) as process:
        assert process.stdout is not None
        async for _line in procio_text.LineReceiveStream(process.stdout):
            count += 1
    return count


async def _anyio_lines(command: list[str]) -> int:
    count = 0
    async with await anyio.open_process(command, stdin=None, stderr=None) as process:
        assert process.stdout is not None
        buffered = BufferedByteReceiveStream(process.stdout)
        while True:
            try:
                await buffered.receive_until(b"\n", 65536)
            except (anyio.EndOfStream, anyio.IncompleteRead):
                break
            count += 1
    return count


async def _asyncio_lines(command: list[str]) -> int:
    process = await asyncio.create_subprocess_exec(*command, stdout=asyncio.subprocess.PIPE)
    assert process.stdout is not None
    count = 0
    while await process.stdout.readline():
        count += 1
    await process.wait()
    return count


def _blocking_decode(command: list[str]) -> float:
    # The floor: the same child read with blocking os.read calls of 64 KiB, each chunk
    # fed to an incremental decoder; no event loop, no stream objects.
    decoder = codecs.getincrementaldecoder("utf-8")()
    start = time.perf_counter()
    with subprocess.Popen(command, stdout=subprocess.PIPE, bufsize=0) as popen:
        assert popen.stdout is not None
        fd = popen.stdout.fileno()
        while chunk := os.read(fd, 65536):
            decoder.decode(chunk)
    decoder.decode(b"", final=True)
    return time.perf_counter() - start


class _Bytes(ObjectReceiveStream[bytes]):
    """Hands out the given chunks without waiting: what is measured is the framing."""

    def __init__(self, chunks: list[bytes]) -> None:
        self._chunks = chunks[::-1]

    async def receive(self) -> bytes:
        if not self._chunks:
            raise anyio.EndOfStream
        return self._chunks.pop()

    async def aclose(self) -> None:
        self._chunks.clear()


async def _one_long_line(length: int) -> int:
    chunks = [b"x"] * length + [b"\n"]
    stream = procio_text.LineReceiveStream(_Bytes(chunks), max_line_length=None)
    return sum([len(line) async for line in stream])


def _long_line_ns_per_char(length: int) -> float:
    got, took = anyio.run(timed_in_loop, _one_long_line, length)
    assert got == length
    return took / length * 1e9


def _measure(func: Callable[[list[str]], Awaitable[int]], command: list[str]) -> float:
    _, took = anyio.run(timed_in_loop, func, command)
    return took


def _sample(
    rows: dict[str, Row],
    contenders: dict[str, tuple[str, str, Callable[[], float]]],
    repeats: int,
    work: float,
) -> None:
    # Interleaved rounds (see _harness.rounds); a sample is *work* units per second.
    for _, key in rounds(repeats, list(contenders)):
        rows[key].samples.append(work / contenders[key][2]())


def main() -> None:
    args = parser(__doc__ or "").parse_args()
    total = (4 if args.quick else 256) * 1024 * 1024
    # Decoding swings the most from round to round here (the child, the reader and the
    # pipe share two CPUs): more rounds than the other scripts take, for a steadier
    # median.
    repeats = 2 if args.quick else 9
    mb = total / 1e6
    rows: list[Row] = []
    for label, line in (("ASCII", ASCII_LINE), ("mixed UTF-8", UTF8_LINE)):
        figure = "decode-ascii" if label == "ASCII" else "decode-utf8"
        title = f"decode {label} process output, {total >> 20} MiB"
        command = _child(line, total)
        contenders: dict[str, tuple[str, str, Callable[[], float]]] = {
            name: (name, role, partial(_measure, func, command))
            for name, role, func in (
                ("procio (process + text)", "subject", _procio_decode),
                ("anyio", "anyio", _anyio_decode),
                ("procio text over anyio process", "other", _mixed_decode),
            )
        }
        contenders["floor"] = (
            "floor: blocking read + incremental decoder",
            "floor",
            partial(_blocking_decode, command),
        )
        group = {
            key: Row(figure, title, "text", name, role, "MB/s", higher_is_better=True)
            for key, (name, role, _) in contenders.items()
        }
        _sample(group, contenders, repeats, mb)
        rows += group.values()

    line_total = (2 if args.quick else 64) * 1024 * 1024
    lines = line_total // len(ASCII_LINE)
    title = f"line framing, {line_total >> 20} MiB of {len(ASCII_LINE)}-byte lines"
    command = _child(ASCII_LINE, line_total)
    contenders = {
        name: (name, role, partial(_measure, func, command))
        for name, role, func in (
            ("procio LineReceiveStream", "subject", _procio_lines),
            ("anyio receive_until", "anyio", _anyio_lines),
            ("asyncio StreamReader.readline", "other", _asyncio_lines),
        )
    }
    group = {
        key: Row("lines", title, "text", name, role, "lines/s", higher_is_better=True)
        for key, (name, role, _) in contenders.items()
    }
    _sample(group, contenders, repeats, lines)
    rows += group.values()

    title = "one long line, a byte at a time (the cost per character must not grow)"
    long_lines = {
        f"procio LineReceiveStream, {length:,} characters": (role, length)
        for role, length in (("other", 16_000), ("subject", 64_000))
    }
    group = {
        name: Row("lines-long", title, "text", name, role, "ns/char", higher_is_better=False)
        for name, (role, _) in long_lines.items()
    }
    for _, name in rounds(repeats, list(long_lines)):
        group[name].samples.append(_long_line_ns_per_char(long_lines[name][1]))
    rows += group.values()
    report(rows, args.json)


if __name__ == "__main__":
    main()
