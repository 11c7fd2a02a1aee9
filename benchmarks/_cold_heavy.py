"""The cold start sample of ``_cold.py`` with a heavy ``__main__``.

    python benchmarks/_cold_heavy.py CONTENDER

Here the main module imports ``hypothesis`` at the top (a large third-party package, the
kind of import a real program's main module starts with), so that a library whose
workers import the parent's main module pays for it in each worker it starts.
"""

from __future__ import annotations

import hypothesis  # noqa: F401  # the heavy import this figure is about
from _cold import main

if __name__ == "__main__":
    main()
