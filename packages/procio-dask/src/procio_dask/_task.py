"""What runs on the Dask worker for each call and each chunk of a map.

Dask imports this module by name on its workers, so ``procio-dask`` must be installed
in the workers' environment as well as in the caller's.

How a call travels::

    parent                                   Dask worker
    prepare_call: pickle func, args ───────► run_call(func, args, holes, *large)
      large buffers left out (holes),          unpickle, put the large ones back,
      scattered by Dask on their own           func(*args)
                                     ◄───────  the result, as Dask sends results
                                     ◄───────  or TaskFailure: the exception pickled
                                               here (or not at all) and its traceback

The call is pickled in the parent, before anything reaches Dask, so that an argument
that cannot be serialized fails early and alone. An exception travels pickled inside a
:class:`TaskFailure` rather than as itself, so that the parent tells apart the
function's exception, an exception that could not be pickled here, and one that cannot
be rebuilt there. A chunk of a map (:func:`run_batch`) carries each item's arguments
pickled apart, and pickles each result here as soon as its item has run, for the same
reason: arguments or a result that cannot travel are the error of their own item.
"""

from __future__ import annotations

import pickle
import traceback
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Any

import cloudpickle
from procio_workers import RemoteTraceback, SerializationError, WorkerError

#: Where a scattered argument goes back: (item of the batch, position in its arguments).
Hole = tuple[int, int]

#: The stages at which a :class:`TaskFailure` can happen.
ARGUMENTS = "arguments"
CALL = "call"
RESULT = "result"


class TaskFailure(Exception):  # noqa: N818 - a carrier, raised only between the two sides
    """An item failed on the Dask worker; carries what the parent needs to rebuild it.

    Attributes:
        stage: :data:`ARGUMENTS` (the call could not be unpickled on the worker),
            :data:`CALL` (the function raised) or :data:`RESULT` (its result could not
            be pickled).
        type_name: the qualified name of the exception's class.
        message: ``str()`` of the exception.
        traceback: the traceback of the function's own frames, as text.
        pickled: the exception pickled on the worker (stage :data:`CALL` and an
            :class:`Exception` only), or ``None`` if it could not be.
    """

    def __init__(
        self, stage: str, type_name: str, message: str, traceback: str, pickled: bytes | None
    ) -> None:
        super().__init__(stage, type_name, message, traceback, pickled)
        self.stage = stage
        self.type_name = type_name
        self.message = message
        self.traceback = traceback
        self.pickled = pickled

    def __str__(self) -> str:
        return f"{self.type_name}: {self.message}" if self.message else self.type_name


def dumps(value: object) -> bytes:
    """Pickle *value* as Dask would: by reference where it can, else by value.

    ``pickle`` first; ``cloudpickle`` for what ``pickle`` refuses (lambdas, closures,
    nested functions) or would send as a reference to ``__main__``, which a Dask
    worker's ``__main__`` does not hold.
    """
    try:
        data = pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        pass
    else:
        if b"__main__" not in data:
            return data
    by_value: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    return by_value


def loads(data: bytes) -> Any:
    """Unpickle what :func:`dumps` made."""
    return pickle.loads(data)


def _qualified_name(kind: type[BaseException]) -> str:
    return f"{kind.__module__}.{kind.__qualname__}"


def _describe(exc: BaseException, stage: str, skip: int) -> TaskFailure:
    """Describe *exc* for the parent, its traceback without its first *skip* frames."""
    tb: TracebackType | None = exc.__traceback__
    for _ in range(skip):
        tb = tb.tb_next if tb is not None else None
    text = "".join(traceback.format_exception(type(exc), exc, tb))
    pickled: bytes | None = None
    if stage == CALL and isinstance(exc, Exception):
        try:
            pickled = dumps(exc.with_traceback(None))
        except Exception:
            pickled = None
    try:
        message = str(exc)
    except Exception:
        message = f"<str() of the {type(exc).__name__} failed>"
    return TaskFailure(stage, _qualified_name(type(exc)), message, text, pickled)


def _fill_holes(
    holes: Sequence[Hole], large: Sequence[object]
) -> dict[int, list[tuple[int, object]]]:
    """The scattered arguments of each item: item -> [(position, value), ...]."""
    by_item: dict[int, list[tuple[int, object]]] = {}
    for (item, position), value in zip(holes, large, strict=True):
        by_item.setdefault(item, []).append((position, value))
    return by_item


def _load_args(data: bytes, scattered: Sequence[tuple[int, object]]) -> tuple[Any, ...]:
    """Unpickle one item's arguments and put its scattered ones back in their places."""
    args: tuple[Any, ...] = loads(data)
    if scattered:
        filled = list(args)
        for position, value in scattered:
            filled[position] = value
        args = tuple(filled)
    return args


def _call(func: Callable[..., object], args: tuple[Any, ...]) -> object:
    """Call ``func(*args)``; whatever it raises comes back as a :class:`TaskFailure`.

    ``SystemExit``, ``KeyboardInterrupt`` and other exceptions that are not
    :class:`Exception` would end the Dask worker (Dask lets them escape its task thread
    and restarts the worker); caught here, they come back as
    :class:`~procio_workers.WorkerError` in the parent, as they do from procio's local
    workers.
    """
    try:
        return func(*args)
    except BaseException as exc:
        # Only the function's own frames: the first one is this wrapper's.
        failure = _describe(exc, CALL, skip=1)
    # Raised outside the handler, so that the failure does not carry the function's
    # exception along as its context (Dask would try to pickle that too).
    raise failure


def _load_func(data: bytes) -> Callable[..., object]:
    try:
        func: Callable[..., object] = loads(data)
    except Exception as exc:
        failure = _describe(exc, ARGUMENTS, skip=0)
    else:
        return func
    raise failure


def run_call(func_data: bytes, args_data: bytes, holes: Sequence[Hole], *large: object) -> object:
    """Run one call on a Dask worker and return its result.

    *func_data* and *args_data* are the function and its arguments, pickled by
    :func:`dumps`; *large* are the scattered arguments, which go back into *holes*.
    """
    func = _load_func(func_data)
    try:
        args = _load_args(args_data, _fill_holes(holes, large).get(0, ()))
    except Exception as exc:
        failure = _describe(exc, ARGUMENTS, skip=0)
    else:
        return _call(func, args)
    raise failure


#: What :func:`run_batch` returns: ``(results, failure)``, the pickled results of the
#: items that succeeded, in order, and the failure of the next one (``None`` if every
#: item succeeded).
BatchOutcome = tuple[list[bytes], TaskFailure | None]


def run_batch(
    func_data: bytes, items_data: Sequence[bytes], holes: Sequence[Hole], *large: object
) -> BatchOutcome:
    """Run the calls of one chunk of a map, in order, until the first that fails.

    Each item's arguments are unpickled just before it runs, so that one that cannot be
    rebuilt here fails alone, after the items before it.
    """
    func = _load_func(func_data)
    scattered = _fill_holes(holes, large)
    results: list[bytes] = []
    for item, data in enumerate(items_data):
        try:
            args = _load_args(data, scattered.get(item, ()))
        except Exception as exc:
            return results, _describe(exc, ARGUMENTS, skip=0)
        try:
            value = _call(func, args)
        except TaskFailure as failure:
            return results, failure
        try:
            results.append(dumps(value))
        except Exception as exc:
            return results, _describe(exc, RESULT, skip=0)
    return results, None


def rebuild(failure: TaskFailure) -> BaseException:
    """The exception the parent's caller sees for *failure* (in the parent).

    The function's exception itself when it could travel, with ``__cause__`` its
    traceback text as a :class:`~procio_workers.RemoteTraceback`; a
    :class:`~procio_workers.WorkerError` when it could not, or when it was not an
    :class:`Exception`; a :class:`~procio_workers.SerializationError` when the call's
    arguments could not be rebuilt on the worker or its result could not be pickled there.
    """
    remote = RemoteTraceback(failure.traceback)
    error: BaseException
    if failure.stage == ARGUMENTS:
        error = SerializationError(
            "the call could not be rebuilt on the Dask worker: "
            f"{failure.type_name}: {failure.message}"
        )
    elif failure.stage == RESULT:
        error = SerializationError(
            "the function's result could not be serialized on the Dask worker: "
            f"{failure.type_name}: {failure.message}"
        )
    else:
        exception: object = None
        if failure.pickled is not None:
            try:
                exception = loads(failure.pickled)
            except Exception:
                exception = None
        if isinstance(exception, Exception):
            error = exception
        else:
            error = WorkerError(failure.type_name, failure.message, failure.traceback)
    error.__cause__ = remote
    return error
