"""Set one version on every procio package (and extension) and on every sibling pin.

Usage: ``python scripts/bump_version.py 0.2.0`` (or ``hatch run release:bump 0.2.0``).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_VERSION_LINE = re.compile(r'^version = "[^"]*"$', re.MULTILINE)
_SIBLING_PIN = re.compile(r'("procio(?:-[a-z]+)?(?:\[[a-z,]+\])?)==[^";\s]+')
_PEP440ISH = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


def package_files(root: Path = ROOT) -> list[Path]:
    """Return the pyproject.toml of every package in the repository."""
    return sorted(
        [*root.glob("packages/*/pyproject.toml"), *root.glob("extensions/*/pyproject.toml")]
    )


def bump(version: str, root: Path = ROOT) -> list[Path]:
    """Rewrite every package's version and sibling pins to *version*."""
    if not _PEP440ISH.match(version):
        raise ValueError(f"not a release version: {version!r}")
    changed = []
    for path in package_files(root):
        text = path.read_text(encoding="utf-8")
        new, count = _VERSION_LINE.subn(f'version = "{version}"', text)
        if count != 1:
            raise ValueError(f"{path}: expected exactly one version line, found {count}")
        new = _SIBLING_PIN.sub(rf"\1=={version}", new)
        if new != text:
            path.write_text(new, encoding="utf-8")
            changed.append(path)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    for path in bump(argv[0]):
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
