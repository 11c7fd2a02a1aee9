"""Repository-wide invariants: one version everywhere, and the layer import graph."""

from __future__ import annotations

import ast
import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent

# Which procio packages each import package may import. Lower layers never import
# higher ones, and procio_text and procio_process never import each other.
ALLOWED_IMPORTS: dict[str, set[str]] = {
    "procio_text": set(),
    "procio_process": set(),
    "procio_workers": {"procio_process"},
    "procio": {"procio_text", "procio_process", "procio_workers"},
    "procio_dask": {"procio_workers"},
    "procio_interpreters": {"procio_workers"},
}
# Third-party distributions each layer may import at run time besides the stdlib.
ALLOWED_THIRD_PARTY: dict[str, set[str]] = {
    "procio_text": {"anyio", "typing_extensions"},
    "procio_process": {"anyio", "typing_extensions", "exceptiongroup"},
    "procio_workers": {"anyio", "typing_extensions", "cloudpickle", "exceptiongroup"},
    "procio_dask": {"anyio", "typing_extensions", "distributed", "dask", "cloudpickle"},
    "procio": {"anyio"},  # the demo in __main__ runs on anyio
    # CPython 3.13's interpreter modules, absent from sys.stdlib_module_names before it.
    "procio_interpreters": {"anyio", "typing_extensions", "_interpreters", "_interpqueues"},
}
# Single modules that may import more, because that import happens only when a user
# asks for it: a pytest plugin (only pytest loads it), the demo's --loop uvloop.
OPTIONAL_IMPORTS: dict[str, set[str]] = {
    "procio_process/pytest_plugin.py": {"pytest"},
    "procio/__main__.py": {"uvloop"},
}


def _load_pyproject(path: Path) -> dict[str, Any]:
    with path.open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)
    return data


def _packages() -> dict[str, dict[str, Any]]:
    paths = [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("extensions/*/pyproject.toml")]
    return {path.parent.name: _load_pyproject(path) for path in sorted(paths)}


def _source_dir(distribution: str) -> Path:
    for folder in ("packages", "extensions"):
        candidate = ROOT / folder / distribution / "src" / _import_name(distribution)
        if candidate.is_dir():
            return candidate
    raise AssertionError(f"no source folder for {distribution}")


def _import_name(distribution: str) -> str:
    return distribution.replace("-", "_")


def _imported_top_levels(source_dir: Path) -> dict[str, set[Path]]:
    found: dict[str, set[Path]] = {}
    for path in source_dir.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                found.setdefault(name.partition(".")[0], set()).add(path)
    return found


def test_every_layer_is_present() -> None:
    assert set(_packages()) >= {"procio-text", "procio-process", "procio-workers", "procio"}


def test_all_packages_share_one_version() -> None:
    versions = {name: data["project"]["version"] for name, data in _packages().items()}
    assert len(set(versions.values())) == 1, versions


def test_sibling_pins_are_exact_and_match_the_version() -> None:
    packages = _packages()
    version = next(iter(packages.values()))["project"]["version"]
    pin = re.compile(r"^(procio(?:-[a-z]+)?)(\[[a-z,]+\])?\s*(.*?)\s*(;.*)?$")
    checked = 0
    for name, data in packages.items():
        project = data["project"]
        requirements = list(project.get("dependencies", []))
        for extra in project.get("optional-dependencies", {}).values():
            requirements.extend(extra)
        for requirement in requirements:
            match = pin.match(requirement)
            if not match or match.group(1) not in packages:
                continue
            checked += 1
            assert match.group(3) == f"=={version}", f"{name}: {requirement!r}"
    assert checked >= 4


def test_import_graph_follows_the_layers() -> None:
    packages = _packages()
    for distribution in packages:
        module = _import_name(distribution)
        if module not in ALLOWED_IMPORTS:
            continue
        imported = _imported_top_levels(_source_dir(distribution))
        siblings = {name for name in imported if name in ALLOWED_IMPORTS and name != module}
        forbidden = siblings - ALLOWED_IMPORTS[module]
        assert not forbidden, {name: sorted(map(str, imported[name])) for name in forbidden}


def test_layers_import_only_the_stdlib_and_declared_third_parties() -> None:
    for module, allowed in ALLOWED_THIRD_PARTY.items():
        distribution = module.replace("_", "-")
        source = _source_dir(distribution)
        imported = _imported_top_levels(source)
        third_party = set()
        for name, paths in imported.items():
            if name in sys.stdlib_module_names or name in ALLOWED_IMPORTS or name == "__future__":
                continue
            for path in paths:
                relative = path.relative_to(source.parent).as_posix()
                if name not in OPTIONAL_IMPORTS.get(relative, set()):
                    third_party.add(name)
        assert third_party <= allowed, (module, sorted(third_party - allowed))


def test_sibling_imports_are_declared_dependencies() -> None:
    packages = _packages()
    for distribution, data in packages.items():
        module = _import_name(distribution)
        imported = _imported_top_levels(_source_dir(distribution))
        declared = {
            _import_name(re.split(r"[\[=<>~!; ]", requirement, maxsplit=1)[0])
            for requirement in data["project"].get("dependencies", [])
        }
        for sibling in set(imported) & set(ALLOWED_IMPORTS):
            if sibling != module:
                assert sibling in declared, f"{distribution} imports {sibling} undeclared"


def test_extensions_use_only_the_public_api() -> None:
    # procio-dask and procio-interpreters are written as a third party would write them,
    # like the extensions.
    paths = [
        *ROOT.glob("extensions/*/src/**/*.py"),
        *ROOT.glob("packages/procio-dask/src/**/*.py"),
        *ROOT.glob("packages/procio-interpreters/src/**/*.py"),
    ]
    assert paths
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            modules: list[str] = []
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
                modules += [f"{node.module}.{alias.name}" for alias in node.names]
            for name in modules:
                parts = name.split(".")
                if parts[0].startswith("procio"):
                    assert not any(part.startswith("_") for part in parts[1:]), (path, name)


def test_every_package_ships_py_typed() -> None:
    for distribution in _packages():
        assert (_source_dir(distribution) / "py.typed").is_file()


def _load_bump_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "bump_version", ROOT / "scripts" / "bump_version.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bump_script_moves_every_version_and_pin(tmp_path: Path) -> None:
    for folder in ("packages", "extensions"):
        shutil.copytree(
            ROOT / folder, tmp_path / folder, ignore=shutil.ignore_patterns("src", "tests")
        )
    bump_version = _load_bump_script()
    changed = bump_version.bump("9.8.7", root=tmp_path)
    assert len(changed) == len(_packages())
    for path in [
        *tmp_path.glob("packages/*/pyproject.toml"),
        *tmp_path.glob("extensions/*/pyproject.toml"),
    ]:
        text = path.read_text(encoding="utf-8")
        assert 'version = "9.8.7"' in text
        assert "==0." not in text.replace("anyio", "")
        project = _load_pyproject(path)["project"]
        for requirement in project.get("dependencies", []):
            if requirement.startswith("procio"):
                assert requirement.endswith("==9.8.7"), requirement


def test_bump_script_rejects_a_non_version(tmp_path: Path) -> None:
    bump_version = _load_bump_script()
    with pytest.raises(ValueError, match="not a release version"):
        bump_version.bump("latest", root=tmp_path)
