"""What a user of a single distribution gets: license, links, classifiers, README code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on Python 3.10 only
    import tomli as tomllib

# procio-process's pytest plugin: no test here may leave a process or an fd behind.
pytestmark = pytest.mark.procio_leak_check

ROOT = Path(__file__).resolve().parent.parent
PACKAGE_DIRS = sorted(
    path.parent
    for path in [*ROOT.glob("packages/*/pyproject.toml"), *ROOT.glob("extensions/*/pyproject.toml")]
)
READMES = [ROOT / "README.md", *(folder / "README.md" for folder in PACKAGE_DIRS)]
# A Markdown link or image whose target is neither absolute nor an in-page anchor.
_RELATIVE_LINK = re.compile(r"\]\((?!https?://|#|mailto:)([^)\s]+)\)")
_PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.DOTALL)


def _project(folder: Path) -> dict[str, Any]:
    with (folder / "pyproject.toml").open("rb") as f:
        data: dict[str, Any] = tomllib.load(f)["project"]
    return data


@pytest.mark.parametrize("folder", PACKAGE_DIRS, ids=lambda p: p.name)
def test_every_distribution_ships_the_license_text(folder: Path) -> None:
    project = _project(folder)
    assert project["license-files"] == ["LICENSE"]
    assert (folder / "LICENSE").read_text() == (ROOT / "LICENSE").read_text()


@pytest.mark.parametrize("folder", PACKAGE_DIRS, ids=lambda p: p.name)
def test_every_distribution_names_its_links_and_platforms(folder: Path) -> None:
    project = _project(folder)
    assert {"Homepage", "Documentation", "Source", "Issues"} <= set(project["urls"])
    classifiers = project["classifiers"]
    assert any(c.startswith("Operating System ::") for c in classifiers)
    versions = {c.rsplit(" ", 1)[-1] for c in classifiers if re.search(r":: 3\.\d+$", c)}
    floor = project["requires-python"].removeprefix(">=")

    def key(version: str) -> tuple[int, ...]:
        return tuple(map(int, version.split(".")))

    # The classifiers name the Pythons it runs on: never one below the declared floor.
    assert versions
    assert key(min(versions, key=key)) >= key(floor)


@pytest.mark.parametrize("folder", PACKAGE_DIRS, ids=lambda p: p.name)
def test_package_readmes_use_absolute_links(folder: Path) -> None:
    # A package's README is its page on the package index, where a relative link leads
    # nowhere.
    text = (folder / "README.md").read_text()
    assert _RELATIVE_LINK.findall(text) == []


def _examples() -> list[Any]:
    params = []
    for readme in READMES:
        for number, block in enumerate(_PYTHON_BLOCK.findall(readme.read_text())):
            if "anyio.run(" not in block:
                continue  # a fragment, not a program
            name = f"{readme.relative_to(ROOT).parent.name or 'root'}-{number}"
            params.append(pytest.param(block, id=name))
    return params


@pytest.mark.parametrize("code", _examples())
def test_readme_examples_run(code: str, tmp_path: Path) -> None:
    script = tmp_path / "example.py"
    script.write_text(code)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip(), "the example printed nothing"
