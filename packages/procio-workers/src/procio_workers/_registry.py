"""Finding serializers and launchers by name, through entry points."""

from __future__ import annotations

from ._serializers import CloudpickleSerializer, PickleSerializer
from .abc import LAUNCHER_ENTRY_POINTS, SERIALIZER_ENTRY_POINTS, Launcher, Serializer

_BUILTIN_SERIALIZERS: dict[str, type[Serializer]] = {
    "pickle": PickleSerializer,
    "cloudpickle": CloudpickleSerializer,
}


def _load(group: str, name: str, builtin: tuple[str, ...] = ()) -> object:
    # Imported here: importlib.metadata (with the email and zipfile modules it pulls in)
    # takes longer to import than a worker takes to start, and only a lookup by name
    # needs it.
    from importlib.metadata import entry_points

    found = entry_points(group=group, name=name)
    for entry_point in found:
        return entry_point.load()()
    names = {*builtin, *(ep.name for ep in entry_points(group=group))}
    known = ", ".join(repr(n) for n in sorted(names))
    kind = "serializer" if group == SERIALIZER_ENTRY_POINTS else "launcher"
    raise LookupError(
        f"no {kind} named {name!r}: the known names are {known or 'none'} (a package adds "
        f"one through the {group!r} entry point group)"
    )


def resolve_serializer(serializer: Serializer | str | None) -> Serializer:
    """Return *serializer*, the built-in one or the entry point it names, or the default."""
    if serializer is None:
        return PickleSerializer()
    if isinstance(serializer, str):
        builtin = _BUILTIN_SERIALIZERS.get(serializer)
        loaded = (
            builtin()
            if builtin is not None
            else _load(SERIALIZER_ENTRY_POINTS, serializer, tuple(_BUILTIN_SERIALIZERS))
        )
        if not isinstance(loaded, Serializer):
            raise TypeError(f"the serializer entry point {serializer!r} is not a Serializer")
        return loaded
    if not isinstance(serializer, Serializer):
        raise TypeError(f"expected a Serializer, got {type(serializer).__name__}")
    return serializer


def resolve_launcher(launcher: Launcher | str | None) -> Launcher:
    """Return *launcher*, the entry point it names, or the default launcher."""
    if launcher is None:
        return Launcher()
    if isinstance(launcher, str):
        loaded = _load(LAUNCHER_ENTRY_POINTS, launcher)
        if not isinstance(loaded, Launcher):
            raise TypeError(f"the launcher entry point {launcher!r} is not a Launcher")
        return loaded
    if not isinstance(launcher, Launcher):
        raise TypeError(f"expected a Launcher, got {type(launcher).__name__}")
    return launcher
