"""Serializers and launchers by name: an unknown name says which names exist."""

from __future__ import annotations

import re

import pytest
from procio_workers import WorkerPool


def test_an_unknown_serializer_lists_the_known_names() -> None:
    with pytest.raises(ValueError) as caught:
        WorkerPool(serializer="no-such-codec")
    message = str(caught.value)
    assert "'no-such-codec'" in message
    # The built-in names are listed beside the installed entry points.
    known = re.search(r"the known names are (.*?) \(", message)
    assert known, message
    assert {"'pickle'", "'cloudpickle'"} <= set(known.group(1).split(", "))


def test_an_unknown_launcher_lists_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"no launcher named 'no-such-launcher': the known names"):
        WorkerPool(launcher="no-such-launcher")
