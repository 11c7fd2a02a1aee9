"""The complete examples of the docs pages run as written, pasted into a file.

A complete example is a ``python`` block that runs itself (``anyio.run(main)``); the
other blocks are fragments of one. Each must exit cleanly, print something, write
nothing to standard error and leave no process behind.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ._examples import check_example_runs

ROOT = Path(__file__).resolve().parent.parent
PAGES = ["docs/many-tasks.md"]
EXAMPLES = [
    (page, index, block)
    for page in PAGES
    for index, block in enumerate(
        re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), re.DOTALL)
    )
    if "anyio.run(main)" in block
]


def test_every_page_has_complete_examples() -> None:
    assert {page for page, _, _ in EXAMPLES} == set(PAGES)


@pytest.mark.parametrize(
    ("page", "index", "block"),
    EXAMPLES,
    ids=[f"{page}-{index}" for page, index, _ in EXAMPLES],
)
def test_docs_example_runs(page: str, index: int, block: str, tmp_path: Path) -> None:
    check_example_runs(block, tmp_path / f"example_{index}.py")
