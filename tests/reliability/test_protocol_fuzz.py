"""Fuzzing both ends of the worker protocol with real processes.

The worker program is started as the pool starts it and fed bad frames: a wrong
protocol version, garbage in place of the handshake, garbage calls after it. It must
refuse them cleanly (exit status 3, a message on stderr, or an ERROR reply) and never
crash, hang or run anything. The parent is given fake workers that send garbage, wrong
versions and huge lengths: every call must end with a typed error, promptly, and leave
nothing behind.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any

import anyio
import pytest
from anyio import fail_after
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from procio_process import DEVNULL, PIPE, Process, open_process
from procio_workers import BrokenWorkerProcess, SerializationError, WorkerError, WorkerPool, _wire
from procio_workers._process_backend import BOOTSTRAP, WORKER_PROGRAM
from procio_workers.abc import Launcher

from ._support import LeakGuard, scaled, tally

pytestmark = pytest.mark.anyio

#: Spawning a process per example is costly: few examples, every backend.
process_fuzz = settings(
    max_examples=scaled(6),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

WIRE_PATH = _wire.__file__


class RawWorker:
    """The worker program, started by hand, with the parent's ends of its pipes."""

    def __init__(self, process: Process, request_fd: int, response_fd: int) -> None:
        self.process = process
        self.request_fd = request_fd
        self.response_fd = response_fd
        self.reader = _wire.FrameReader()

    @classmethod
    async def start(cls) -> RawWorker:
        request_read, request_write = os.pipe()
        response_read, response_write = os.pipe()
        try:
            process = await open_process(
                [
                    sys.executable,
                    "-c",
                    BOOTSTRAP,
                    WORKER_PROGRAM,
                    str(request_read),
                    str(response_write),
                ],
                stdin=DEVNULL,
                stdout=DEVNULL,
                stderr=PIPE,
                pass_fds=(request_read, response_write),
            )
        finally:
            os.close(request_read)
            os.close(response_write)
        os.set_blocking(response_read, False)
        return cls(process, request_write, response_read)

    async def read_frame(self) -> _wire.Frame | None:
        """The next frame from the worker, or ``None`` once it closed its end."""
        while not self.reader.frames:
            try:
                data = os.read(self.response_fd, 65536)
            except BlockingIOError:
                await anyio.wait_readable(self.response_fd)
                continue
            if not data:
                self.reader.eof()
                return None
            self.reader.feed(data)
        return self.reader.frames.popleft()

    def send(self, data: bytes) -> bool:
        """Write *data* (small enough for the pipe); ``False`` if the worker is gone."""
        try:
            view = memoryview(data)
            while view.nbytes:
                view = view[os.write(self.request_fd, view) :]
        except BrokenPipeError:
            return False
        return True

    def send_frame(self, kind: int, segments: Sequence[bytes]) -> bool:
        buffers = _wire.encode_frame(kind, segments)
        return self.send(b"".join(bytes(memoryview(b).cast("B")) for b in buffers))

    async def handshake(self) -> None:
        hello = await self.read_frame()
        assert hello is not None
        assert hello.kind == _wire.HELLO
        init = {"protocol": _wire.PROTOCOL_VERSION, "sys_path": sys.path, "codec": "pickle"}
        assert self.send_frame(_wire.INIT, [json.dumps(init).encode()])
        ready = await self.read_frame()
        assert ready is not None
        assert ready.kind == _wire.READY

    async def finish(self) -> tuple[int, bytes]:
        """Close our ends, wait for the worker; return its exit status and stderr."""
        os.close(self.request_fd)
        frames_after = []
        with fail_after(10):
            while (frame := await self.read_frame()) is not None:
                frames_after.append(frame)
            os.close(self.response_fd)
            assert self.process.stderr is not None
            stderr = b""
            async for chunk in self.process.stderr:
                stderr += chunk
            status = await self.process.wait()
        await self.process.aclose()
        self.frames_after = frames_after
        return status, stderr


# Every version but the integers the worker speaks (1 to PROTOCOL_VERSION); a float is
# refused even when it equals one of them (2.0 is not the integer 2 in INIT's JSON).
versions = st.one_of(
    st.integers().filter(lambda v: not _wire.MIN_PROTOCOL_VERSION <= v <= _wire.PROTOCOL_VERSION),
    st.text(max_size=5),
    st.none(),
    st.booleans(),
    st.lists(st.integers(), max_size=2),
    st.floats(allow_nan=False),
)


@process_fuzz
@given(version=versions)
async def test_the_worker_refuses_a_wrong_protocol_version(
    anyio_backend: Any, version: object
) -> None:
    guard = LeakGuard(f"version {version!r}")
    worker = await RawWorker.start()
    hello = await worker.read_frame()
    assert hello is not None
    assert json.loads(bytes(hello.segments[0]))["protocol"] == _wire.PROTOCOL_VERSION
    worker.send_frame(_wire.INIT, [json.dumps({"protocol": version}).encode()])
    status, stderr = await worker.finish()
    assert worker.frames_after == []  # no READY
    assert status == _wire.EXIT_PROTOCOL_ERROR, stderr
    assert b"protocol" in stderr
    guard.check()
    tally("wrong protocol versions refused by the worker")


def frame_bytes(kind: int, segments: Sequence[bytes]) -> bytes:
    return b"".join(bytes(memoryview(b).cast("B")) for b in _wire.encode_frame(kind, segments))


init_garbage = st.one_of(
    st.binary(min_size=1, max_size=300),
    # A well-formed INIT frame whose payload is not the JSON object INIT must hold.
    st.one_of(
        st.binary(max_size=40),
        st.sampled_from([b"[]", b"null", b"7", b'"text"', b"{", b'{"protocol": []}']),
    ).map(lambda payload: frame_bytes(_wire.INIT, [payload])),
    # A well-formed INIT frame of the wrong shape.
    st.lists(st.binary(max_size=10), min_size=2, max_size=3).map(
        lambda segs: frame_bytes(_wire.INIT, segs)
    ),
    # Any other kind first.
    st.sampled_from(sorted(set(_wire.KIND_NAMES) - {_wire.INIT})).map(
        lambda kind: frame_bytes(kind, [b"{}"])
    ),
)


@process_fuzz
@given(garbage=init_garbage)
async def test_the_worker_refuses_garbage_in_place_of_its_init(
    anyio_backend: Any, garbage: bytes
) -> None:
    guard = LeakGuard(f"garbage {garbage!r}")
    worker = await RawWorker.start()
    assert (await worker.read_frame()) is not None
    worker.send(garbage)
    status, stderr = await worker.finish()
    assert worker.frames_after == []
    # A clean refusal: the protocol error status, never a signal or a traceback.
    assert status == _wire.EXIT_PROTOCOL_ERROR, stderr
    assert b"Traceback" not in stderr, stderr
    guard.check()
    tally("garbage handshakes refused by the worker")


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"protocol": []}', id="wrong-version-type"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x80", id="not-utf8"),
        pytest.param(b"{", id="bad-json"),
        pytest.param(b"[]", id="list"),
        pytest.param(b"null", id="null"),
    ],
)
async def test_the_worker_refuses_an_init_that_is_not_a_json_object(
    anyio_backend: Any, payload: bytes
) -> None:
    guard = LeakGuard(f"INIT payload {payload!r}")
    worker = await RawWorker.start()
    assert (await worker.read_frame()) is not None
    worker.send(frame_bytes(_wire.INIT, [payload]))
    status, stderr = await worker.finish()
    assert worker.frames_after == []
    assert status == _wire.EXIT_PROTOCOL_ERROR, stderr
    assert b"Traceback" not in stderr, stderr
    guard.check()
    tally("malformed INIT messages refused by the worker")


bad_frames = st.lists(
    st.one_of(
        # A CALL whose segments are not a pickled call.
        st.lists(st.binary(max_size=40), max_size=3).map(
            lambda segs: b"".join(
                bytes(memoryview(b).cast("B")) for b in _wire.encode_frame(_wire.CALL, segs)
            )
        ),
        st.binary(min_size=1, max_size=60),
    ),
    min_size=1,
    max_size=4,
)


@process_fuzz
@given(frames=bad_frames)
async def test_the_worker_answers_or_refuses_garbage_calls(
    anyio_backend: Any, frames: list[bytes]
) -> None:
    guard = LeakGuard(f"frames {frames!r}")
    worker = await RawWorker.start()
    await worker.handshake()
    for data in frames:
        if not worker.send(data):
            break
    status, stderr = await worker.finish()
    for frame in worker.frames_after:
        # Anything it says is an answer to a call; garbage arguments get an ERROR.
        assert frame.kind in (_wire.ERROR, _wire.RESULT)
        if frame.kind == _wire.ERROR:
            assert json.loads(bytes(frame.segments[0]))["stage"] == "arguments"
    assert status in (0, _wire.EXIT_PROTOCOL_ERROR), stderr
    assert b"Traceback" not in stderr, stderr
    guard.check()
    tally("garbage calls sent to a worker", len(frames))


# -- the parent, facing fake workers -----------------------------------------------------

# A stand-in for the worker program: it follows the protocol as far as its settings say,
# then writes raw bytes and exits (or lingers, to prove the parent does not wait).
FAKE_WORKER = """
import importlib.util, json, os, sys, time
request, response, settings = int(sys.argv[1]), int(sys.argv[2]), json.loads(sys.argv[3])
spec = importlib.util.spec_from_file_location("_procio_wire", settings["wire"])
wire = importlib.util.module_from_spec(spec)
spec.loader.exec_module(wire)
reader = wire.FrameReader()
if "handshake" in settings:
    os.write(response, bytes.fromhex(settings["handshake"]))
    sys.exit(0)
hello = {"protocol": settings.get("version", wire.PROTOCOL_VERSION), "pid": os.getpid(),
         "codecs": ["pickle", "cloudpickle"], "features": []}
hello = bytes.fromhex(settings["hello"]) if "hello" in settings else json.dumps(hello).encode()
wire.write_frame_blocking(response, wire.HELLO, [hello])
if wire.read_frame_blocking(request, reader) is None:
    sys.exit(0)
ready = bytes.fromhex(settings.get("ready", b'{"ok": true}'.hex()))
wire.write_frame_blocking(response, wire.READY, [ready])
if wire.read_frame_blocking(request, reader) is None:
    sys.exit(0)
os.write(response, bytes.fromhex(settings["reply"]))
if settings.get("linger"):
    time.sleep(30)
"""


class FakeLauncher(Launcher):
    def __init__(self, **settings: Any) -> None:
        self.settings = {"wire": WIRE_PATH, **settings}

    def command(self, argv: Sequence[str]) -> list[str]:
        # The last two arguments of the real command are the protocol descriptors.
        return [sys.executable, "-S", "-c", FAKE_WORKER, *argv[-2:], json.dumps(self.settings)]


async def call_fake(**settings: Any) -> BaseException:
    """Run one call on a fake worker; return the error it ended with."""
    with fail_after(10):  # every failure below must be prompt, not a start timeout
        async with WorkerPool(max_workers=1, launcher=FakeLauncher(**settings)) as pool:
            try:
                value = await pool.run_sync(len, "abc")
            except (BrokenWorkerProcess, SerializationError, WorkerError) as error:
                return error
            except Exception as error:
                raise AssertionError(f"an untyped error from a fake worker: {error!r}") from error
    raise AssertionError(f"a fake worker produced a result: {value!r}")


@process_fuzz
@given(garbage=st.binary(max_size=200))
async def test_the_parent_refuses_garbage_in_place_of_the_handshake(
    anyio_backend: Any, garbage: bytes
) -> None:
    guard = LeakGuard(f"garbage {garbage!r}")
    error = await call_fake(handshake=garbage.hex())
    assert isinstance(error, BrokenWorkerProcess), error
    guard.check()
    tally("garbage handshakes refused by the parent")


@process_fuzz
@given(version=versions)
async def test_the_parent_refuses_a_worker_of_another_protocol_version(
    anyio_backend: Any, version: object
) -> None:
    guard = LeakGuard(f"version {version!r}")
    error = await call_fake(version=version)
    assert isinstance(error, BrokenWorkerProcess), error
    assert "protocol version" in str(error)
    guard.check()
    tally("wrong protocol versions refused by the parent")


@pytest.mark.parametrize(
    ("stage", "payload"),
    [
        pytest.param("hello", b"", id="hello-empty"),
        pytest.param("hello", b"\x80", id="hello-not-utf8"),
        pytest.param("hello", b"{", id="hello-bad-json"),
        pytest.param("hello", b"{}", id="hello-no-version"),
        pytest.param("hello", b"[]", id="hello-list"),
        pytest.param("hello", b"7", id="hello-number"),
        pytest.param("ready", b"{}", id="ready-not-ok"),
        pytest.param("ready", b'{"ok": false}', id="ready-false"),
        pytest.param("ready", b"", id="ready-empty"),
        pytest.param("ready", b"\x80", id="ready-not-utf8"),
        pytest.param("ready", b"{", id="ready-bad-json"),
        pytest.param("ready", b"null", id="ready-null"),
    ],
)
async def test_the_parent_refuses_a_handshake_message_with_garbage_inside(
    anyio_backend: Any, stage: str, payload: bytes
) -> None:
    guard = LeakGuard(f"{stage} {payload!r}")
    error = await call_fake(**{stage: payload.hex()})
    assert isinstance(error, BrokenWorkerProcess), error
    guard.check()
    tally("garbage handshake messages refused by the parent")


replies = st.one_of(
    st.binary(max_size=200),
    # A well-formed RESULT or ERROR frame with garbage inside.
    st.tuples(
        st.sampled_from([_wire.RESULT, _wire.ERROR]),
        st.lists(st.binary(max_size=60), max_size=3),
    ).map(
        lambda kind_segs: b"".join(
            bytes(memoryview(b).cast("B")) for b in _wire.encode_frame(*kind_segs)
        )
    ),
)


@process_fuzz
@given(reply=replies)
async def test_the_parent_turns_a_garbage_reply_into_a_typed_error(
    anyio_backend: Any, reply: bytes
) -> None:
    guard = LeakGuard(f"reply {reply!r}")
    await call_fake(reply=reply.hex())
    guard.check()
    tally("garbage replies refused by the parent")


@process_fuzz
@given(length=st.integers(min_value=_wire.DEFAULT_MAX_FRAME_LENGTH + 1, max_value=2**64 - 1))
async def test_the_parent_refuses_a_huge_reply_at_once(anyio_backend: Any, length: int) -> None:
    guard = LeakGuard(f"length {length}")
    header = _wire.HEADER.pack(_wire.RESULT, 0, 1) + _wire.LENGTH.pack(length)
    # The fake lingers after the header: the parent must not wait for the bytes.
    error = await call_fake(reply=header.hex(), linger=True)
    assert isinstance(error, BrokenWorkerProcess), error
    assert "exceeds the limit" in str(error)
    guard.check()
    tally("huge reply lengths refused by the parent")
