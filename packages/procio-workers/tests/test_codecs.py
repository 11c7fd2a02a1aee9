"""The public pickle codec, ``procio_workers.codecs``, and a third-party codec built on it.

The third-party codec is the example of the page "Extending procio-workers" (pickle
with a zlib-compressed stream), taken from the page itself and installed as a package
of its own in a temporary folder, so that what the page shows is what runs here.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import textwrap
import types
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import procio_workers
import pytest
from procio_workers import WorkerPool, _wire, testing
from procio_workers.abc import Serializer
from procio_workers.codecs import OUT_OF_BAND_THRESHOLD, Codec, PickleCodec

if TYPE_CHECKING:
    from tests import procio_workers_testfuncs as funcs
else:
    import procio_workers_testfuncs as funcs

ROOT = Path(__file__).resolve().parents[3]
EXTENDING = ROOT / "docs" / "extending.md"
WIRE_PATH = Path(_wire.__file__)

# What a bare import of the package or of its codec module may load beyond the
# standard library.
LIGHT = {"procio_workers", "procio_workers.codecs", "procio_workers._wire"}
# Modules that only a heavy import brings in; no worker on a codec may load them.
HEAVY = ("anyio", "sniffio", "procio_process", "procio_workers.abc", "procio_workers._pool")

# A fresh interpreter runs *code*, then prints the modules it loaded from outside the
# standard library (what site loaded at start-up, a .pth hook say, does not count).
_REPORT = """
import json, sys
before = set(sys.modules)
{code}
print(json.dumps(sorted(
    m for m in set(sys.modules) - before if m.partition(".")[0] not in sys.stdlib_module_names
)))
"""


def _fresh(code: str) -> subprocess.CompletedProcess[str]:
    """Run *code* in a fresh interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result


def _loaded_after(code: str) -> set[str]:
    """Return the modules from outside the standard library that *code* loaded."""
    result = _fresh(_REPORT.format(code=textwrap.dedent(code)))
    loaded: list[str] = json.loads(result.stdout.splitlines()[-1])
    return set(loaded)


# --- the package imports nothing heavy until asked ---------------------------------


def test_importing_the_codecs_module_imports_no_anyio() -> None:
    loaded = _loaded_after("import procio_workers.codecs")
    assert loaded <= LIGHT, sorted(loaded - LIGHT)
    assert "procio_workers.codecs" in loaded


def test_importing_the_package_imports_no_anyio() -> None:
    loaded = _loaded_after("import procio_workers")
    assert loaded == {"procio_workers"}


def test_the_protocol_version_needs_no_anyio() -> None:
    loaded = _loaded_after("from procio_workers import PROTOCOL_VERSION")
    assert loaded == {"procio_workers", "procio_workers._wire"}


def test_a_name_of_the_package_loads_on_first_use() -> None:
    loaded = _loaded_after("""
        import procio_workers
        assert callable(procio_workers.to_process.run_sync)
        """)
    assert "anyio" in loaded
    assert "procio_workers._pool" in loaded


def test_from_import_of_every_public_name_works_in_a_fresh_interpreter() -> None:
    names = ", ".join(procio_workers.__all__)
    result = _fresh(f"""
        from procio_workers import {names}
        import procio_workers
        assert WorkerPool.__module__ == "procio_workers._pool"
        assert abc.Serializer.__module__ == "procio_workers.abc"
        assert to_process.run_sync is procio_workers.to_process.run_sync
        print("ok")
        """)
    assert result.stdout.split() == ["ok"]


def test_threads_that_ask_for_a_name_at_once_all_get_the_same_object() -> None:
    result = _fresh("""
        import threading
        import procio_workers

        start = threading.Barrier(8)
        found = []

        def ask():
            start.wait()
            found.append((procio_workers.WorkerPool, procio_workers.abc.Serializer))

        threads = [threading.Thread(target=ask) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        from procio_workers._pool import WorkerPool
        from procio_workers.abc import Serializer
        print(len(found), all(pair == (WorkerPool, Serializer) for pair in found))
        """)
    assert result.stdout.split() == ["8", "True"]


def test_star_import_gives_exactly_the_public_names() -> None:
    result = _fresh("""
        import json
        namespace = {}
        exec("from procio_workers import *", namespace)
        print(json.dumps(sorted(k for k in namespace if k != "__builtins__")))
        """)
    assert json.loads(result.stdout) == sorted(procio_workers.__all__)


def test_every_public_name_is_the_object_of_its_home_module() -> None:
    from procio_workers import _errors, _mapping, _pool, _process_backend, _serializers
    from procio_workers import abc as abc_module
    from procio_workers import to_process as to_process_module

    homes: dict[str, object] = {
        "to_process": to_process_module,
        "abc": abc_module,
        "PROTOCOL_VERSION": _wire.PROTOCOL_VERSION,
        "OutputHandler": _process_backend.OutputHandler,
        "ProcessBackend": _process_backend.ProcessBackend,
        "WorkerPool": _pool.WorkerPool,
        "PoolStatistics": _pool.PoolStatistics,
        "MapResults": _mapping.MapResults,
        "StreamResults": _mapping.StreamResults,
        "PickleSerializer": _serializers.PickleSerializer,
        "CloudpickleSerializer": _serializers.CloudpickleSerializer,
    }
    for name in ("BatchError", "BrokenWorkerProcess", "RemoteTraceback", "SerializationError"):
        homes[name] = getattr(_errors, name)
    homes["WorkerError"] = _errors.WorkerError
    # A name added to __all__ must be added to the package's lazy table, and here.
    assert set(homes) == set(procio_workers.__all__)
    for name, expected in homes.items():
        assert getattr(procio_workers, name) is expected, name
        # Resolved once, then found as an ordinary attribute of the package.
        assert vars(procio_workers)[name] is expected, name


def test_dir_lists_every_public_name() -> None:
    assert set(procio_workers.__all__) <= set(dir(procio_workers))


def test_an_unknown_name_is_an_attribute_error_naming_it() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        # The ignore is checked too (mypy warns of unused ones): type checkers must not
        # take any name for one that the package loads on first use.
        procio_workers.no_such_name  # type: ignore[attr-defined]  # noqa: B018
    assert not hasattr(procio_workers, "no_such_name")


# --- the public codec ---------------------------------------------------------------


def test_the_public_codec_is_the_one_the_built_in_serializer_uses() -> None:
    assert PickleCodec is _wire.PickleCodec
    assert OUT_OF_BAND_THRESHOLD == _wire.OUT_OF_BAND_THRESHOLD
    serializer = procio_workers.PickleSerializer()
    big = b"\x07" * OUT_OF_BAND_THRESHOLD
    segments = serializer.dump_call(funcs.echo, (big,))
    assert [bytes(s) for s in segments] == [
        bytes(s) for s in PickleCodec().dumps((funcs.echo, (big,)), 2)
    ]


def test_the_pickle_codec_follows_the_codec_protocol() -> None:
    codec: Codec = PickleCodec()  # mypy checks the protocol here
    assert isinstance(codec, Codec)
    assert not isinstance(object(), Codec)


@pytest.mark.parametrize("depth", [1, 2])
def test_depth_decides_how_deep_large_bytes_go_out_of_band(depth: int) -> None:
    big = bytes(range(256)) * (OUT_OF_BAND_THRESHOLD // 256)
    value = (funcs.echo, (big, bytearray(big)))
    segments = PickleCodec().dumps(value, depth)
    # Depth 1 reaches the pair, not the arguments inside it: they stay in the stream.
    assert len(segments) == (3 if depth == 2 else 1)
    received = PickleCodec().loads([bytearray(memoryview(s).cast("B")) for s in segments])
    assert isinstance(received, tuple)
    func, args = received
    assert func is funcs.echo
    assert args == (big, bytearray(big))
    assert [type(arg) for arg in args] == [bytes, bytearray]


def _worker_copy_of_the_wire() -> types.ModuleType:
    """Load the wire module by path under another name, as the worker program does."""
    spec = importlib.util.spec_from_file_location("_procio_wire_test_copy", WIRE_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _sample() -> object:
    big = bytes(range(256)) * (OUT_OF_BAND_THRESHOLD // 256 + 1)
    return (
        big,
        bytearray(big),
        memoryview(big).cast("I"),
        funcs.CustomError(7),
        {"nested": [big, "text"]},
    )


def _check_sample(value: Any) -> None:
    big, array, view, error, nested = value
    assert type(big) is bytes
    assert type(array) is bytearray
    assert array == big
    assert view.format == "I"
    assert view.tobytes() == big
    assert isinstance(error, funcs.CustomError)
    assert error.code == 7
    assert nested == {"nested": [big, "text"]}


def test_the_worker_copy_and_the_public_codec_read_each_other() -> None:
    copy = _worker_copy_of_the_wire()
    assert copy.PickleCodec is not PickleCodec  # a second copy, as in a worker
    pairs = [(PickleCodec(), copy.PickleCodec()), (copy.PickleCodec(), PickleCodec())]
    for writer, reader in pairs:
        segments = writer.dumps(_sample())
        assert len(segments) > 1, "the large buffers went in band"
        received = [bytearray(memoryview(s).cast("B")) for s in segments]
        _check_sample(reader.loads(received))


# --- a third-party codec built on it: the example of the extending page -------------


def _example_files() -> dict[str, str]:
    """Return the example package's files, as the extending page shows them."""
    text = EXTENDING.read_text(encoding="utf-8")
    blocks = re.findall(r'```python title="(zlib_pickle/[^"]+)"\n(.*?)```', text, re.DOTALL)
    files = dict(blocks)
    assert set(files) == {"zlib_pickle/codec.py", "zlib_pickle/serializer.py"}, sorted(files)
    return files


@pytest.fixture(scope="module")
def zlib_pickle(tmp_path_factory: pytest.TempPathFactory) -> Iterator[types.ModuleType]:
    """The example package, importable here and (through ``sys.path``) in workers."""
    folder = tmp_path_factory.mktemp("third_party")
    (folder / "zlib_pickle").mkdir()
    (folder / "zlib_pickle" / "__init__.py").write_text("", encoding="utf-8")
    for name, source in _example_files().items():
        (folder / name).write_text(source, encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        package = importlib.import_module("zlib_pickle")
        importlib.import_module("zlib_pickle.codec")
        importlib.import_module("zlib_pickle.serializer")
        try:
            yield package
        finally:
            for name in [m for m in sys.modules if m.partition(".")[0] == "zlib_pickle"]:
                del sys.modules[name]


def _serializer(package: types.ModuleType) -> Serializer:
    serializer: Serializer = package.serializer.ZlibPickleSerializer()
    return serializer


def test_the_example_codec_compresses_and_keeps_buffers_out_of_band(
    zlib_pickle: types.ModuleType,
) -> None:
    big = bytes(range(256)) * 1024
    text = "compressible " * 10_000
    segments = _serializer(zlib_pickle).dump_call(funcs.echo, (text, big))
    assert len(segments) == 2, "the large bytes argument went in band"
    assert bytes(segments[1]) == big
    # The stream is compressed: far smaller than the text it carries.
    assert len(bytes(segments[0])) < len(text) // 10
    func, args = zlib_pickle.codec.ZlibPickleCodec().loads(
        [bytearray(memoryview(s).cast("B")) for s in segments]
    )
    assert (func, args) == (funcs.echo, (text, big))


def test_the_example_serializer_passes_the_conformance_kit(zlib_pickle: types.ModuleType) -> None:
    testing.check_serializer(_serializer(zlib_pickle))


def test_the_kit_still_fails_a_codec_on_the_pickle_codec_that_imports_anyio(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "heavy_codec.py").write_text(
        "import procio_workers.abc\nfrom procio_workers.codecs import PickleCodec as HeavyCodec\n",
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))

    class HeavySerializer(procio_workers.PickleSerializer):
        worker_codec = "heavy_codec:HeavyCodec"

    with pytest.raises(AssertionError, match=r"imports anyio.*procio_workers\.abc"):
        testing.check_codec_imports(HeavySerializer())


@pytest.mark.anyio
async def test_the_example_serializer_drives_the_worker_program(
    zlib_pickle: types.ModuleType,
) -> None:
    await testing.check_worker_command(testing.python_worker_command(), _serializer(zlib_pickle))


@pytest.mark.anyio
async def test_large_buffers_round_trip_through_a_pool_on_the_example_codec(
    zlib_pickle: types.ModuleType,
) -> None:
    big = bytes(range(256)) * 4096  # 1 MiB
    values: list[object] = [big, bytearray(big), memoryview(big).cast("Q"), "small", 42]
    with anyio.fail_after(60):
        async with WorkerPool(max_workers=1, serializer=_serializer(zlib_pickle)) as pool:
            for value in values:
                back = await pool.run_sync(funcs.echo, value)
                if isinstance(value, memoryview):
                    assert memoryview(back).cast("B").tobytes() == value.tobytes()  # type: ignore[arg-type]
                else:
                    assert type(back) is type(value)
                    assert back == value
            length = await pool.run_sync(funcs.length, big)
            assert length == len(big)
            with pytest.raises(funcs.CustomError) as raised:
                await pool.run_sync(funcs.fail_deep, 5)
            assert raised.value.code == 5
            assert pool.statistics().started == 1


@pytest.mark.anyio
async def test_maps_and_streams_run_on_the_example_codec(zlib_pickle: types.ModuleType) -> None:
    # Batches of calls and lists of yielded items are other messages the codec encodes.
    big = bytes(range(256)) * 1024
    inputs: list[object] = [big, b"", bytearray(big), "text" * 1000, bytes(big[:100])]
    with anyio.fail_after(60):
        async with WorkerPool(max_workers=2, serializer=_serializer(zlib_pickle)) as pool:
            lengths = [n async for n in pool.map(len, inputs, chunksize=2)]
            assert lengths == [len(value) for value in inputs]  # type: ignore[arg-type]
            echoed = [item async for item in pool.map(funcs.echo, inputs, chunksize=5)]
            assert echoed == inputs
            assert [type(item) for item in echoed] == [type(value) for value in inputs]
            items = [item async for item in pool.stream(itertools.repeat, big, 3)]
            assert items == [big] * 3


@pytest.mark.anyio
async def test_a_worker_on_the_example_codec_loads_no_anyio(
    zlib_pickle: types.ModuleType,
) -> None:
    with anyio.fail_after(60):
        async with WorkerPool(max_workers=1, serializer=_serializer(zlib_pickle)) as pool:
            loaded = set(await pool.run_sync(funcs.modules_loaded))
    assert not {m for m in loaded if m.startswith(HEAVY)}, sorted(loaded)
    # It did run the example codec, on the public module (beside the worker's own copy
    # of the wire module, which it loaded by path).
    assert {"zlib_pickle.codec", "procio_workers.codecs", "_procio_wire"} <= loaded
    # Beyond the standard library: the worker program and the parent's main module, the
    # codec's package, the public codec module and what it stands on, and the module of
    # the function called; nothing else at all.
    expected = {
        "_procio_worker",
        "__main__",
        "zlib_pickle",
        "zlib_pickle.codec",
        "procio_workers",
        "procio_workers.codecs",
        "procio_workers._wire",
        "_procio_wire",
        "procio_workers_testfuncs",
        "__mp_main__",
    }
    # (Less what any interpreter here loads as it starts: site's .pth hooks, say.)
    bare = _fresh("import json, sys; print(json.dumps(list(sys.modules)))")
    at_start = set(json.loads(bare.stdout))
    beyond = {m for m in loaded - at_start if m.partition(".")[0] not in sys.stdlib_module_names}
    assert beyond <= expected, sorted(beyond - expected)


# A script run as __main__: its class travels to a worker and back through the example
# codec (the worker knows the parent's main module as __mp_main__).
_MAIN_SCRIPT = """
import anyio
from procio_workers import WorkerPool
from zlib_pickle.serializer import ZlibPickleSerializer


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


def moved(point, by):
    return Point(point.x + by, point.y + by), bytes(by) * 65536


async def main():
    async with WorkerPool(max_workers=1, serializer=ZlibPickleSerializer()) as pool:
        point, padding = await pool.run_sync(moved, Point(1, 2), 1)
    assert type(point) is Point, type(point)
    print(point.x, point.y, len(padding))


if __name__ == "__main__":
    anyio.run(main)
"""


def test_a_class_of_the_main_module_travels_through_the_example_codec(
    zlib_pickle: types.ModuleType, tmp_path: Path
) -> None:
    script = tmp_path / "point_script.py"
    script.write_text(_MAIN_SCRIPT, encoding="utf-8")
    folder = str(Path(zlib_pickle.__file__ or "").parent.parent)
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONPATH": folder},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["2", "3", "65536"]


@pytest.mark.anyio
async def test_a_codec_of_another_package_receives_bytearrays_however_large(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The worker reads large bytes in place only for its own codecs: the segments it
    # hands any other codec are bytearrays, as documented.
    (tmp_path / "recording_codec.py").write_text(
        textwrap.dedent(
            """
            from procio_workers.codecs import PickleCodec

            SEEN = []

            class RecordingCodec(PickleCodec):
                def loads(self, segments):
                    SEEN.append([type(segment).__name__ for segment in segments])
                    return super().loads(segments)

            def seen():
                return SEEN
            """
        ),
        encoding="utf-8",
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    recording: Any = importlib.import_module("recording_codec")

    class RecordingSerializer(procio_workers.PickleSerializer):
        worker_codec = "recording_codec:RecordingCodec"

    big = bytes(range(256)) * (2 << 12)  # 2 MiB
    with anyio.fail_after(60):
        async with WorkerPool(max_workers=1, serializer=RecordingSerializer()) as pool:
            assert await pool.run_sync(funcs.echo, big) == big
            seen = await pool.run_sync(recording.seen)
    assert ["bytearray", "bytearray"] in seen
    assert all(kinds == ["bytearray"] * len(kinds) for kinds in seen), seen
