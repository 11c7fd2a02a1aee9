"""The facade re-exports exactly the public API of the layers, and holds no logic."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import procio
import procio_process
import procio_text
import procio_workers

LAYERS = (procio_text, procio_process, procio_workers)


def test_facade_exports_the_union_of_the_layers() -> None:
    union = set().union(*(set(layer.__all__) for layer in LAYERS))
    assert set(procio.__all__) == union


def test_every_export_is_the_layer_object_itself() -> None:
    for layer in LAYERS:
        for name in layer.__all__:
            assert getattr(procio, name) is getattr(layer, name), name


def test_facade_init_only_reexports() -> None:
    source = Path(procio.__file__).read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue  # the docstring
        if isinstance(node, ast.ImportFrom):
            assert node.module is not None
            assert node.module == "__future__" or node.module.split(".")[0] in {
                "procio_text",
                "procio_process",
                "procio_workers",
            }
            for alias in node.names:
                assert node.module == "__future__" or alias.asname == alias.name
            continue
        assert isinstance(node, ast.Assign | ast.AnnAssign), ast.dump(node)
        target = node.targets[0] if isinstance(node, ast.Assign) else node.target
        assert isinstance(target, ast.Name)
        assert target.id == "__all__"


def test_the_facade_imports_the_lazy_workers_package_from_a_fresh_interpreter() -> None:
    # procio_workers loads its names on first use; the facade's re-exports must still
    # be the layer's own objects when nothing was imported before.
    code = (
        "import procio, procio_workers\n"
        "assert procio.WorkerPool is procio_workers.WorkerPool\n"
        "assert procio.abc is procio_workers.abc\n"
        "print(procio.PROTOCOL_VERSION)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [str(procio_workers.PROTOCOL_VERSION)]
