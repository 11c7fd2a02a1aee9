"""README's examples run as written, as a new user would paste them into a file."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._examples import check_example_runs

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_an_example_per_layer() -> None:
    text = "\n".join(BLOCKS)
    for layer in ("procio_text", "procio_process", "procio_workers"):
        assert f"from {layer} import" in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    check_example_runs(BLOCKS[index], tmp_path / f"readme_example_{index}.py")
