"""The built-in serializers, launcher, backend and worker program pass the conformance kit."""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
from procio_workers import CloudpickleSerializer, PickleSerializer, ProcessBackend, testing
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


@pytest.mark.parametrize("serializer", [PickleSerializer(), CloudpickleSerializer()])
async def test_the_worker_program_conforms(serializer: PickleSerializer) -> None:
    await testing.check_worker_command(testing.python_worker_command(), serializer)


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


class _BrokenLauncher(Launcher):
    def command(self, argv: Sequence[str]) -> list[str]:
        # Drops the protocol descriptors: the worker cannot speak.
        return [sys.executable, "-c", "pass"]


async def test_the_kit_catches_a_launcher_that_breaks_the_worker() -> None:
    with pytest.raises(Exception, match="worker"):
        await testing.check_launcher(_BrokenLauncher())


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
            r"\(through codec_importing_abc -> procio_workers\)",
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
    (tmp_path / "codec_standard_only.py").write_text("import pickle\n" + _CODEC_CLASS)
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
