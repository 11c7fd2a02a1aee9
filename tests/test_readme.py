"""README's examples run as written, as a new user would paste them into a file."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def test_readme_has_an_example_per_layer() -> None:
    text = "\n".join(BLOCKS)
    for layer in ("procio_text", "procio_process", "procio_workers"):
        assert f"from {layer} import" in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_runs(index: int, tmp_path: Path) -> None:
    script = tmp_path / f"readme_example_{index}.py"
    script.write_text(BLOCKS[index], encoding="utf-8")
    before = {child.pid for child in psutil.Process().children(recursive=True)}
    result = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), "every example prints something"
    assert result.stderr == ""
    after = {child.pid for child in psutil.Process().children(recursive=True)}
    assert after <= before
