"""The built-in serializers, launcher, backend and worker program pass the conformance kit."""

from __future__ import annotations

import pickle
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
from procio_workers import (
    BrokenWorkerProcess,
    CloudpickleSerializer,
    PickleSerializer,
    ProcessBackend,
    SerializationError,
    WorkerPool,
    _wire,
    testing,
)
from procio_workers._process_backend import ProcessWorker
from procio_workers.abc import Buffer, Launcher, Serializer, Worker, WorkerBackend

pytestmark = pytest.mark.anyio

PICKLE_SAMPLES = (
    *testing.JSON_SAMPLES,
    (1, 2),
    b"bytes" * 20_000,
    bytearray(b"array" * 20_000),
    frozenset({1, 2}),
    ValueError("an exception is a value too"),
)


@pytest.mark.parametrize("serializer", [PickleSerializer(), CloudpickleSerializer()])
def test_the_built_in_serializers_conform(serializer: PickleSerializer) -> None:
    samples = [s for s in PICKLE_SAMPLES if not isinstance(s, BaseException)]
    testing.check_serializer(serializer, samples)


async def test_the_default_launcher_conforms() -> None:
    await testing.check_launcher(Launcher())


async def test_the_process_backend_conforms() -> None:
    await testing.check_backend(ProcessBackend)


async def test_the_process_backend_keeps_to_its_frame_limit() -> None:
    limit = 16 * 1024
    await testing.check_frame_limits(lambda: ProcessBackend(max_frame_length=limit), limit)


@pytest.mark.parametrize("serializer", [PickleSerializer(), CloudpickleSerializer()])
async def test_the_worker_program_conforms(serializer: PickleSerializer) -> None:
    await testing.check_worker_command(testing.python_worker_command(), serializer)


@pytest.mark.parametrize("serializer", [PickleSerializer(), CloudpickleSerializer()])
async def test_the_worker_program_keeps_to_its_frame_limit(serializer: PickleSerializer) -> None:
    await testing.check_worker_command(
        testing.python_worker_command(), serializer, max_frame_length=64 * 1024
    )


class _SwallowingSerializer(PickleSerializer):
    def load_reply(self, segments: Sequence[memoryview]) -> object:
        return None


def test_the_kit_catches_a_serializer_that_loses_results() -> None:
    with pytest.raises(AssertionError, match="came back as None"):
        testing.check_serializer(_SwallowingSerializer())


class _ErrorSwallowingWorker(Worker):
    def __init__(self) -> None:
        self.closed = False

    @property
    def alive(self) -> bool:
        return not self.closed

    async def call(self, request: Any) -> object:
        func, args = request
        if func is int:
            return 0  # swallows the error the kit expects
        return func(*args)

    def kill(self) -> None:
        self.closed = True

    async def aclose(self) -> None:
        self.closed = True


class _InProcessBackend(WorkerBackend):
    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        return _ErrorSwallowingWorker()


async def test_the_kit_catches_a_backend_that_swallows_errors() -> None:
    with pytest.raises(AssertionError, match="must reach the caller"):
        await testing.check_backend(_InProcessBackend)


class _RecordingBackend(WorkerBackend):
    def __init__(self) -> None:
        self.starts: list[dict[str, Any]] = []

    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        self.starts.append(dict(options))
        return _ErrorSwallowingWorker()


async def test_a_backend_without_prestart_worker_prestarts_with_start_worker() -> None:
    # prestart_worker is optional: a backend written before it existed still gets its
    # prestarted workers, started as ordinary reusable ones, and no other start.
    backend = _RecordingBackend()
    async with WorkerPool(max_workers=3, prestart=2, backend=backend) as pool:
        assert backend.starts == [{}, {}]
        assert pool.statistics().idle == 2
        assert await pool.run_sync(abs, -3) == 3
    assert backend.starts == [{}, {}]


class _Delegating(Worker):
    """A ProcessBackend worker behind a wrapper, so that a test can spoil one step."""

    def __init__(self, inner: Worker, backend: _SpoiltBackend) -> None:
        self.inner = inner
        self.backend = backend
        self.pid = inner.pid

    @property
    def alive(self) -> bool:
        return self.inner.alive

    async def call(self, request: Any) -> object:
        return await self.inner.call(request)

    def kill(self) -> None:
        self.inner.kill()

    async def aclose(self) -> None:
        await self.inner.aclose()


class _SpoiltBackend(ProcessBackend):
    worker_class: ClassVar[type[_Delegating]] = _Delegating

    def __init__(self) -> None:
        super().__init__()
        self.leaked: list[Worker] = []

    async def start_worker(self, options: Mapping[str, Any]) -> Worker:
        return self.worker_class(await super().start_worker(options), self)

    async def aclose(self) -> None:
        # Whatever a spoilt worker left running is closed here, after the kit looked.
        for worker in self.leaked:
            worker.kill()
            await worker.aclose()
        await super().aclose()


class _UnkillableWorker(_Delegating):
    """Leaks its process: kill() and aclose() do nothing (its backend closes it later)."""

    @property
    def alive(self) -> bool:
        # What a worker that cannot be killed reports: its process runs on. (The inner
        # worker, whose cancelled call was never answered, would say it takes no more.)
        assert isinstance(self.inner, ProcessWorker)
        return self.inner.process.returncode is None

    def kill(self) -> None:
        pass

    async def aclose(self) -> None:
        if self.inner not in self.backend.leaked:
            self.backend.leaked.append(self.inner)


class _LeakingWorker(_UnkillableWorker):
    """Says it is dead once killed, and leaks its process all the same."""

    killed = False

    @property
    def alive(self) -> bool:
        return not self.killed and self.inner.alive

    def kill(self) -> None:
        self.killed = True


class _NoRetryWorker(_Delegating):
    """Finds out that its process died only when a call fails (as a remote one would)."""

    failed = False

    @property
    def alive(self) -> bool:
        return not self.failed

    def kill(self) -> None:
        self.failed = True
        self.inner.kill()

    async def call(self, request: Any) -> object:
        try:
            return await self.inner.call(request)
        except BrokenWorkerProcess as exc:
            self.failed = True
            exc.started = True  # the defect: a call that never reached it counts as lost
            raise


class _FragileWorker(_Delegating):
    async def call(self, request: Any) -> object:
        try:
            return await self.inner.call(request)
        except SerializationError:
            self.inner.kill()  # the defect: a result that cannot travel ends the worker
            raise


class _UnwrappedErrorBackend(ProcessBackend):
    def prepare_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Any:
        # The defect: the serializer's own error reaches the caller as it is.
        return _wire.encode_frame(_wire.CALL, self.serializer.dump_call(func, args))


class _FlatteningSerializer(PickleSerializer):
    def load_reply(self, segments: Sequence[memoryview]) -> object:
        value = super().load_reply(segments)
        # The defect: a bytearray result comes back as bytes.
        return bytes(value) if isinstance(value, bytearray) else value


def _spoilt(worker_class: type[_Delegating]) -> Callable[[], WorkerBackend]:
    return type("Spoilt", (_SpoiltBackend,), {"worker_class": worker_class})


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        pytest.param(
            _spoilt(_UnkillableWorker),
            r"^the cancelled call's worker is still alive$",
            id="kill-does-nothing",
        ),
        pytest.param(
            _spoilt(_NoRetryWorker),
            r"^a call given a worker that had died while idle failed instead of running on "
            r"another worker .*started=False.*: worker process \d+: ",
            id="no-retry-when-not-started",
        ),
        pytest.param(
            _spoilt(_FragileWorker),
            r"^a result that cannot be serialized broke the worker$",
            id="result-error-kills-the-worker",
        ),
        pytest.param(
            _spoilt(_LeakingWorker),
            r"^worker \d+, whose call was cancelled, still exists once the pool has closed "
            r"its workers$",
            id="killed-worker-leaked",
        ),
        pytest.param(
            _UnwrappedErrorBackend,
            r"^an argument that cannot be serialized raised TypeError\('this object refuses "
            r"to be serialized'\), not SerializationError$",
            id="argument-error-not-wrapped",
        ),
        pytest.param(
            lambda: ProcessBackend(serializer=_FlatteningSerializer()),
            r"^a large bytearray came back as <class 'bytes'>$",
            id="bytearray-result-flattened",
        ),
    ],
)
async def test_the_kit_catches_a_backend_that_breaks_the_contract(
    factory: Callable[[], WorkerBackend], message: str
) -> None:
    with pytest.raises(AssertionError, match=message):
        await testing.check_backend(factory)


class _BrokenLauncher(Launcher):
    def command(self, argv: Sequence[str]) -> list[str]:
        # Drops the protocol descriptors: the worker cannot speak.
        return [sys.executable, "-c", "pass"]


async def test_the_kit_catches_a_launcher_that_breaks_the_worker() -> None:
    with pytest.raises(AssertionError) as caught:
        await testing.check_launcher(_BrokenLauncher())
    # The worker exits at once without a word: the handshake finds the pipe closed.
    assert re.fullmatch(
        r"a worker started by the launcher could not take a call: worker process \d+: "
        r"the worker closed its end of the protocol \(exit status 0\)",
        str(caught.value),
    ), str(caught.value)
    assert isinstance(caught.value.__cause__, BrokenWorkerProcess)


async def test_the_kit_catches_a_worker_program_that_ignores_shutdown() -> None:
    program = (
        "import os, sys, time, json, struct\n"
        "w = int(sys.argv[2])\n"
        "hello = json.dumps({'protocol': 1, 'pid': os.getpid(), 'codecs': ['pickle']}).encode()\n"
        "os.write(w, struct.pack('>BBH', 1, 0, 1) + struct.pack('>Q', len(hello)) + hello)\n"
        "time.sleep(60)\n"
    )
    with pytest.raises(AssertionError):
        await testing.check_worker_command([sys.executable, "-c", program], timeout=1.0)


# procio's worker program with one step spoilt: it exits instead of reporting a failure
# of the given stage.
_EXITS_ON_STAGE = """
import os, sys, importlib.util as u
spec = u.spec_from_file_location("_procio_worker", sys.argv[1])
worker = u.module_from_spec(spec)
sys.modules["_procio_worker"] = worker
spec.loader.exec_module(worker)
report = worker._send_error

def exit_instead(link, codec, exc, stage, limit):
    if stage == {stage!r}:
        os._exit(5)
    report(link, codec, exc, stage, limit)

worker._send_error = exit_instead
sys.exit(worker.main(sys.argv[2:]))
"""


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ("arguments", "the worker closed the protocol after a CALL the codec cannot decode"),
        ("result", r"the worker closed the protocol after a result the codec cannot encode"),
    ],
)
async def test_the_kit_catches_a_worker_program_that_dies_of_a_bad_call(
    stage: str, message: str
) -> None:
    program = _EXITS_ON_STAGE.format(stage=stage)
    command = [sys.executable, "-c", program, testing.python_worker_command()[-1]]
    with pytest.raises(AssertionError, match=f"^{message}"):
        await testing.check_worker_command(command, timeout=10.0)


@pytest.mark.parametrize("payload", [b"", b"\x80", b"{", b"[]", b"null", b'{"protocol": 99}'])
def test_the_worker_program_refuses_an_init_that_is_not_a_valid_object(payload: bytes) -> None:
    from procio_workers import _wire
    from procio_workers.testing import _session

    with _session(testing.python_worker_command(), 10.0) as session:
        session.expect(_wire.HELLO)
        session.send(_wire.INIT, [payload])
        assert session.wait() == _wire.EXIT_PROTOCOL_ERROR


# -- what a codec brings into the worker ----------------------------------------------

_CODEC_CLASS = """
class Codec:
    def loads(self, segments):
        return pickle.loads(segments[0])

    def dumps(self, value):
        return [pickle.dumps(value)]
"""


class _PlainPickleSerializer(Serializer):
    """Pickle in one segment, with the worker codec a module written by each test."""

    def dump_call(self, func: Callable[..., object], args: tuple[Any, ...]) -> Sequence[Buffer]:
        return [pickle.dumps((func, args))]

    def load_reply(self, segments: Sequence[memoryview]) -> object:
        return pickle.loads(segments[0])


def _serializer_for(codec: str) -> Serializer:
    kind = type("Fixture", (_PlainPickleSerializer,), {"worker_codec": codec})
    serializer: Serializer = kind()
    return serializer


@pytest.mark.parametrize(
    ("files", "codec", "message"),
    [
        pytest.param(
            {"codec_importing_anyio.py": "import pickle\nimport anyio\n" + _CODEC_CLASS},
            "codec_importing_anyio:Codec",
            r"imports anyio into every worker \(through codec_importing_anyio -> anyio\)",
            id="module-imports-anyio",
        ),
        pytest.param(
            {
                "codec_importing_abc.py": "import pickle\n"
                "from procio_workers.abc import Serializer\n" + _CODEC_CLASS
            },
            "codec_importing_abc:Codec",
            r"imports anyio, procio_workers into every worker "
            r"\(through codec_importing_abc -> procio_workers\.abc\)",
            id="module-imports-the-extension-api",
        ),
        pytest.param(
            {
                "heavy_codec_package/__init__.py": "import anyio\n",
                "heavy_codec_package/codec.py": "import pickle\n" + _CODEC_CLASS,
            },
            "heavy_codec_package.codec:Codec",
            r"imports anyio into every worker \(through heavy_codec_package -> anyio\)",
            id="package-init-imports-anyio",
        ),
        pytest.param(
            {
                "codec_importing_late.py": "import pickle\n"
                + _CODEC_CLASS.replace(
                    "    def dumps(self, value):\n",
                    "    def dumps(self, value):\n        import anyio.abc\n",
                )
            },
            "codec_importing_late:Codec",
            r"imports anyio into every worker",
            id="dumps-imports-anyio",
        ),
    ],
)
def test_the_kit_fails_a_codec_that_imports_anyio_into_the_worker(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    files: dict[str, str],
    codec: str,
    message: str,
) -> None:
    for name, source in files.items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(source, encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(AssertionError, match=message):
        testing.check_serializer(_serializer_for(codec))


def test_the_kit_passes_a_codec_that_imports_only_the_standard_library(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # It also prints as it is imported, which must not confuse the kit.
    source = "import pickle\nprint('codec loading')\n" + _CODEC_CLASS
    (tmp_path / "codec_standard_only.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    testing.check_serializer(_serializer_for("codec_standard_only:Codec"))


def test_the_kit_reports_a_codec_that_cannot_be_imported_in_a_worker(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "codec_broken.py").write_text("import pickle\nraise RuntimeError('no way')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    message = r"(?s)failed in a fresh interpreter.*RuntimeError: no way"
    with pytest.raises(AssertionError, match=message):
        testing.check_codec_imports(_serializer_for("codec_broken:Codec"))
