"""The loop that runs inside each subinterpreter; standard library only.

How a call travels (the parent's side is ``_worker``)::

    parent (event loop)                      guest (this module, in the interpreter)
    put(queue, request)
    write b"c" on its socket end  ──────►    os.read(fd) wakes: b"c"
                                             request = get(queue); run it
                                             put(queue, reply)
    wait_readable(socket) wakes   ◄──────    os.write(fd, b"r")
    reply = get(queue)

The socket pair carries only one-byte wake-ups; values go through the interpreter
queue, which shares ``None``, ``bool``, ``int``, ``float``, ``str``, ``bytes``, tuples
of them and (towards the guest) buffers without pickling. End of input on the socket
(the parent shut its end) ends the loop; the host thread then destroys the interpreter.
After an answer the loop may poll its (non-blocking) socket end for the next call for a
while before it blocks in ``select`` (the backend's ``idle_poll``; see ``_Guest.wait``).

This module is loaded by file path in a fresh interpreter, so that the guest imports
neither anyio nor procio_workers: a cold start costs little more than the interpreter.
"""

from __future__ import annotations

import os
import select
import sys
import time

# Not typing.TYPE_CHECKING: importing typing costs a fresh interpreter milliseconds.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any

# Request kinds: the arguments are the shared tuple itself, or a pickle of the tuple
# with its out-of-band buffers.
ARGS_SHARED = 0
ARGS_PICKLED = 1

# Reply kinds.
RESULT_SHARED = 0
RESULT_PICKLED = 1
RAISED = 2  # (pickled exception or None, type name, message, traceback text, is Exception)
RESULT_UNSENDABLE = 3  # (type name, message, traceback text): the result would not pickle
CALL_UNLOADABLE = 4  # (type name, message, traceback text): the call could not be rebuilt

WAKE_CALL = b"c"
WAKE_READY = b"s"
WAKE_REPLY = b"r"

#: True while this interpreter runs its parent's main module. A main module that starts
#: interpreter workers when imported (no ``if __name__ == "__main__":`` guard) would
#: otherwise start workers within workers, without end.
RUNNING_PARENT_MAIN = False

_INT_MIN = -(1 << 63)
_INT_MAX = (1 << 63) - 1
_MAX_DEPTH = 32


_pickler: Any = None


def dumps(value: object, buffer_callback: Callable[[Any], object] | None = None) -> bytes:
    """Pickle *value* with protocol 5; a ``memoryview`` travels too (as a memoryview).

    Plain pickle refuses memoryviews. Here one goes as its bytes (out of band when
    *buffer_callback* is given) and comes back as a memoryview over a copy of them.
    """
    global _pickler
    import io
    import pickle

    if _pickler is None:

        class _Pickler(pickle.Pickler):
            def reducer_override(self, obj: object) -> Any:
                if type(obj) is memoryview:
                    data = pickle.PickleBuffer(obj) if obj.contiguous else obj.tobytes()
                    return memoryview, (data,)
                return NotImplemented

        _pickler = _Pickler
    out = io.BytesIO()
    _pickler(out, 5, buffer_callback=buffer_callback).dump(value)
    return out.getvalue()


def shareable(value: object, *, buffers: bool, depth: int = 0) -> bool:
    """Whether *value* crosses interpreters as it is, and comes out as the same type.

    Exact types only: a subclass (an ``IntEnum``, a ``str`` subclass) would arrive as
    its base type, so it is pickled instead. *buffers* admits C-contiguous memoryviews,
    which are shared without a copy.
    """
    kind = type(value)
    if kind is str or kind is bytes or kind is float or kind is bool or value is None:
        return True
    if kind is int:
        return _INT_MIN <= value <= _INT_MAX  # type: ignore[operator]
    if kind is tuple:
        if depth >= _MAX_DEPTH:
            return False
        return all(shareable(item, buffers=buffers, depth=depth + 1) for item in value)  # type: ignore[attr-defined]
    if buffers and kind is memoryview:
        return bool(value.c_contiguous)  # type: ignore[attr-defined]
    return False


def file_identity(fd: int) -> tuple[int, int]:
    """The device and inode of the file open as *fd* (``(-1, -1)`` if none is)."""
    try:
        status = os.fstat(fd)
    except OSError:
        return (-1, -1)
    return (status.st_dev, status.st_ino)


def same_file(fd: int, identity: tuple[int, int]) -> bool:
    """Whether *fd* still refers to the file it referred to when *identity* was taken."""
    return identity != (-1, -1) and file_identity(fd) == identity


def _describe(exc: BaseException, skip_frames: int) -> tuple[str, str, str]:
    import traceback

    tb = exc.__traceback__
    for _ in range(skip_frames):
        if tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
    kind = type(exc)
    name = (
        kind.__qualname__
        if kind.__module__ == "builtins"
        else f"{kind.__module__}.{kind.__qualname__}"
    )
    try:
        message = str(exc)
    except Exception:  # a broken __str__ must not lose the error
        message = "<unprintable>"
    text = "".join(traceback.format_exception(kind, exc, tb))
    return name, message, text


class _ParentMain(type(sys)):  # type: ignore[misc]  # types.ModuleType, without importing types
    """The parent's ``__main__``, run as ``__mp_main__`` the first time it is needed."""

    def __init__(self, spec: tuple[str, str]) -> None:
        super().__init__("__mp_main__")
        self.__dict__["_procio_spec"] = spec
        self.__dict__["_procio_state"] = 0  # 0: not run, 1: running, 2: run

    def __getattr__(self, name: str) -> Any:
        state = self.__dict__["_procio_state"]
        if state or name.startswith("__"):
            raise AttributeError(f"the parent's main module has no attribute {name!r}")
        self.__dict__["_procio_state"] = 1
        import runpy

        global RUNNING_PARENT_MAIN
        how, where = self.__dict__["_procio_spec"]
        RUNNING_PARENT_MAIN = True
        try:
            if how == "module":
                namespace = runpy.run_module(where, run_name="__mp_main__", alter_sys=False)
            else:
                namespace = runpy.run_path(where, run_name="__mp_main__")
        finally:
            RUNNING_PARENT_MAIN = False
        for key, value in namespace.items():
            if not key.startswith("__"):
                self.__dict__[key] = value
        self.__dict__["_procio_state"] = 2
        return getattr(self, name)


def _install_main(spec: tuple[str, str] | None) -> None:
    if spec is not None:
        main = _ParentMain(spec)
        sys.modules["__main__"] = sys.modules["__mp_main__"] = main


class _Guest:
    def __init__(
        self, fd: int, identity: tuple[int, int], queue: Any, idle_poll: tuple[float, bool]
    ) -> None:
        self.fd = fd
        self.spin, self.adaptive = idle_poll
        self.polling = self.spin > 0
        # Adaptive: poll after an answer only while calls come back to back, that is,
        # the call just answered and the one before it each came within self.spin of
        # the answer before them. One quick call after a pause (a caller woken late,
        # catching up) is no run of calls.
        self.quick = True  # whether the last call came within self.spin of the answer
        self.identity = identity
        self.queue = queue
        self.functions: dict[object, Any] = {}
        self.get: Callable[[], Any]
        self.put: Callable[[object], object]
        if sys.version_info >= (3, 14):
            self.get = queue.get_nowait
            self.put = queue.put_nowait
        elif sys.version_info >= (3, 13):
            # _interpreters registers the type that shared buffers arrive as.
            import _interpqueues
            import _interpreters  # noqa: F401

            self.get = lambda: _interpqueues.get(queue)[0]
            self.put = lambda value: _interpqueues.put(queue, value, 0, 1)

    def function(self, reference: object) -> Any:
        if type(reference) is bytes:
            # Unpickled afresh every time, as a worker process would: a callable object
            # may carry state that the call changes.
            import pickle

            return pickle.loads(reference)
        func = self.functions.get(reference)
        if func is None:
            module_name: str
            qualname: str
            module_name, qualname = reference  # type: ignore[misc]
            func = sys.modules.get(module_name)
            if func is None:
                import importlib

                func = importlib.import_module(module_name)
            for part in qualname.split("."):
                func = getattr(func, part)
            if len(self.functions) < 1024:
                self.functions[reference] = func
        return func

    def run(self, request: tuple[Any, ...]) -> tuple[int, object]:
        kind, reference, payload, buffers = request
        try:
            func = self.function(reference)
            if kind == ARGS_SHARED:
                args = tuple(
                    memoryview(arg) if type(arg) is not memoryview and _is_view(arg) else arg
                    for arg in payload
                )
            else:
                import pickle

                # Copied once here, in the interpreter's own thread: the function gets
                # buffers of its own, as in a worker process, and never writes into the
                # caller's memory (only an explicit memoryview argument is shared).
                args = pickle.loads(payload, buffers=[bytearray(each) for each in buffers])
        except BaseException as exc:  # reported to the caller
            return CALL_UNLOADABLE, _describe(exc, 0)
        del request, payload, buffers
        try:
            result = func(*args)
        except BaseException as exc:  # SystemExit too: reported, never fatal
            return self.raised(exc)
        finally:
            del args
        if shareable(result, buffers=False):
            return RESULT_SHARED, result
        import pickle

        try:
            return RESULT_PICKLED, dumps(result)
        except BaseException as exc:  # reported to the caller
            return RESULT_UNSENDABLE, _describe(exc, 0)

    def raised(self, exc: BaseException) -> tuple[int, object]:
        name, message, text = _describe(exc, 1)
        import pickle

        try:
            data: bytes | None = pickle.dumps(exc, pickle.HIGHEST_PROTOCOL)
        except BaseException:  # then the parent gets names and text only
            data = None
        exc.__traceback__ = None
        return RAISED, (data, name, message, text, isinstance(exc, Exception))

    def wait(self) -> bytes:
        """The next wake-up byte (``b""`` once the parent's end is shut).

        Polled for a while first when calls come back to back (see :data:`SPIN_SECONDS`),
        so that the next call finds this thread awake; else a blocking wait.
        """
        fd = self.fd
        if self.polling:
            deadline = time.perf_counter() + self.spin
            while True:
                try:
                    return os.read(fd, 1)
                except BlockingIOError:
                    if time.perf_counter() > deadline:
                        break
                except InterruptedError:
                    continue
            if self.adaptive:
                self.polling = False
        while True:
            try:
                select.select((fd,), (), ())
                return os.read(fd, 1)
            except (BlockingIOError, InterruptedError):
                continue

    def serve(self) -> None:
        fd = self.fd
        os.set_blocking(fd, False)
        os.write(fd, WAKE_READY)
        answered = time.perf_counter()
        while True:
            try:
                wake = self.wait()
            except OSError:
                return
            if self.adaptive:
                quick = time.perf_counter() - answered < self.spin
                self.polling = quick and self.quick
                self.quick = quick
            if wake != WAKE_CALL:
                return
            try:
                request = self.get()
            except BaseException as exc:  # reported to the caller; the loop goes on
                reply: tuple[int, object] = (CALL_UNLOADABLE, _describe(exc, 0))
            else:
                reply = self.run(request)
                del request
            self.put(reply)
            del reply
            if not same_file(fd, self.identity):
                # The function closed this descriptor, and its number may now be another
                # file's: leave without touching it (the parent saw end of input).
                return
            try:
                os.write(fd, WAKE_REPLY)
            except OSError:
                return
            answered = time.perf_counter()


def _is_view(value: object) -> bool:
    # What a shared memoryview arrives as (a CrossInterpreterBufferView on 3.13).
    return type(value).__name__.endswith("BufferView")


def serve(
    fd: int,
    identity: tuple[int, int],
    queue: Any,
    path: tuple[str, ...],
    main: tuple[str, str] | None,
    idle_poll: tuple[float, bool] = (0.0, False),
) -> None:
    """Run calls from the parent until it shuts its end of the socket.

    *idle_poll* is (seconds to poll for the next call after an answer, adaptive): with
    adaptive on, the guest polls only while calls come back to back.
    """
    sys.path[:] = list(path)
    _install_main(main)
    _Guest(fd, identity, queue, idle_poll).serve()
