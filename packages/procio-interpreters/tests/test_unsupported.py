"""Before Python 3.13 the package imports, and says what it needs when used."""

from __future__ import annotations

import sys

import pytest
from procio_interpreters import InterpreterBackend, interpreters_supported

pytestmark = pytest.mark.skipif(
    sys.version_info >= (3, 13), reason="checks the behaviour before Python 3.13"
)


def test_interpreters_are_not_supported_here() -> None:
    assert interpreters_supported() is False


def test_the_backend_names_the_python_it_needs() -> None:
    with pytest.raises(RuntimeError, match=r"Python 3\.13 or newer"):
        InterpreterBackend()
