"""Regenerate ``packages/procio/src/procio/__init__.py`` from the layers' ``__all__``.

``python scripts/facade.py`` rewrites the facade; ``--check`` only reports whether it is
current (exit 1 if not). The facade holds nothing but these re-exports.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "packages" / "procio" / "src" / "procio" / "__init__.py"
LAYERS = ("procio_text", "procio_process", "procio_workers")

HEADER = '''"""procio: async subprocess and worker-process toolkit for AnyIO (asyncio and Trio).

The facade holds no logic: it re-exports the public API of ``procio_text``,
``procio_process`` and ``procio_workers``. ``python -m procio`` runs a short demo.
"""

from __future__ import annotations

'''


def render() -> str:
    imports: list[str] = []
    names: list[str] = []
    for layer in LAYERS:
        module = importlib.import_module(layer)
        for name in module.__all__:
            imports.append(f"from {layer} import {name} as {name}")
            names.append(name)
    body = "\n".join(imports)
    listing = "\n".join(f'    "{name}",' for name in names)
    return f"{HEADER}{body}\n\n__all__ = [\n{listing}\n]\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        current = TARGET.read_text(encoding="utf-8")
        if current != text:
            print(f"{TARGET.relative_to(ROOT)} is out of date: run python scripts/facade.py")
            return 1
        return 0
    TARGET.write_text(text, encoding="utf-8")
    print(f"wrote {TARGET.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
