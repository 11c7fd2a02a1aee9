"""The worker wire protocol: framing, message kinds and the built-in pickle codecs.

Both sides import this one module: the parent as ``procio_workers._wire`` and the worker
program by file path. It must therefore depend on the standard library only, and must not
import the other modules of ``procio_workers``, which import anyio. The protocol
itself is specified on the worker protocol page of procio's documentation; keep the two
in step.

A frame is a 4-byte header (kind: u8, flags: u8, segment count: u16, all big-endian),
then one u64 length per segment, then the segments back to back. Segments are opaque
bytes; what they hold depends on the kind of message.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import struct
import sys
import types
from collections import deque
from collections.abc import Sequence

# typing.TYPE_CHECKING, without importing typing: the worker program loads this module
# at start-up, and importing typing (with re, which it pulls in) would cost every worker
# some milliseconds for names used in annotations only. Type checkers treat a module
# constant of this name as true.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

#: The newest protocol version spoken here; HELLO announces it, INIT picks the version.
PROTOCOL_VERSION = 2
#: The oldest version still spoken: a version-1 peer runs single calls only.
MIN_PROTOCOL_VERSION = 1

# Message kinds. Worker -> parent: HELLO, READY, RESULT, ERROR (version 1), ITEMS, END
# (version 2). Parent -> worker: INIT, CALL, SHUTDOWN (version 1), BATCH, STREAM, MORE,
# CLOSE (version 2).
HELLO = 1
INIT = 2
READY = 3
CALL = 4
RESULT = 5
ERROR = 6
SHUTDOWN = 7
BATCH = 8
STREAM = 9
ITEMS = 10
END = 11
MORE = 12
CLOSE = 13

KIND_NAMES = {
    HELLO: "HELLO",
    INIT: "INIT",
    READY: "READY",
    CALL: "CALL",
    RESULT: "RESULT",
    ERROR: "ERROR",
    SHUTDOWN: "SHUTDOWN",
    BATCH: "BATCH",
    STREAM: "STREAM",
    ITEMS: "ITEMS",
    END: "END",
    MORE: "MORE",
    CLOSE: "CLOSE",
}

HEADER = struct.Struct(">BBH")
LENGTH = struct.Struct(">Q")
# The header and length table of a frame with one segment, the usual case, in one go.
ONE_SEGMENT = struct.Struct(">BBHQ")

#: Most segments one frame may carry; with the header this stays under IOV_MAX (1024),
#: so a whole frame goes out in one ``writev``.
MAX_SEGMENTS = 1000

#: Largest frame (sum of its segment lengths) a reader accepts unless told otherwise.
DEFAULT_MAX_FRAME_LENGTH = 1 << 30

#: ``bytes``, ``bytearray`` and ``memoryview`` objects at least this long travel out of band.
OUT_OF_BAND_THRESHOLD = 32 * 1024

#: Exit status of a worker that received a frame it could not understand.
EXIT_PROTOCOL_ERROR = 3

_SCRATCH_SIZE = 64 * 1024

# Segments of at least _REUSE_MIN bytes are read into buffers the reader may reuse once
# their consumer let them go, keeping at most _KEEP_LIMIT bytes of them.
_REUSE_MIN = 1 << 20
_KEEP_LIMIT = 64 << 20
# CPython only: other implementations have no reference counts to look at.
_getrefcount = getattr(sys, "getrefcount", None)


class _BytesStorage:
    """Fresh ``bytes`` objects read into in place (CPython): no copy to make them.

    A large out-of-band buffer is usually a ``bytes`` argument or result, which the
    receiving side must hand over as a fresh ``bytes``. Read into a ``bytearray``, it
    would then be copied once more, which costs as much as the read itself. So such a
    segment is read into a new ``bytes`` object, made uninitialized and not yet seen
    by anyone, through a writable view of its storage: what CPython's own ``os.read``
    does. The view is exported by a ``ctypes`` array that holds the ``bytes`` object,
    so a consumer that keeps the buffer (a NumPy array, a ``bytearray`` copy) keeps
    the memory alive, and :func:`_restore` hands out the ``bytes`` object itself.

    ``ctypes`` is imported on the first large segment only (its array types, one per
    length, are collected once unused); where any of this is missing, segments are
    ``bytearray`` objects.

    On Linux the storage of an object of ``_HUGE_PAGES_MIN`` bytes or more is offered
    transparent huge pages (``madvise``, as NumPy does for its large arrays): the read
    that first touches it then takes a page fault per 2 MiB, not per 4 KiB. Where the
    system refuses, nothing changes.
    """

    def __init__(self) -> None:
        import ctypes
        import mmap

        new = ctypes.pythonapi.PyBytes_FromStringAndSize
        new.restype = ctypes.py_object
        new.argtypes = (ctypes.c_void_p, ctypes.c_ssize_t)
        self._new = new
        self._char = ctypes.c_char
        self._offset = bytes.__basicsize__ - 1  # where a bytes object's characters start
        self._madvise: Any = None  # libc's madvise, where huge pages can be offered
        self._advice = 0
        advice = getattr(mmap, "MADV_HUGEPAGE", None)
        if advice is not None and sys.platform.startswith("linux"):
            try:
                madvise = ctypes.CDLL(None, use_errno=True).madvise
            except (OSError, AttributeError):
                pass
            else:
                madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
                madvise.restype = ctypes.c_int
                self._madvise, self._advice = madvise, advice
        # Proven once on a small object: the characters are where they are expected.
        probe, view = self.make(16)
        view[:] = b"procio-bytes-ok!"
        if probe != b"procio-bytes-ok!":
            raise RuntimeError("bytes storage is not laid out as expected")

    def make(self, length: int) -> tuple[bytes, memoryview]:
        """Return a new ``bytes`` of *length* (contents undefined) and a writable view."""
        owner: bytes = self._new(None, length)
        start = id(owner) + self._offset
        if self._madvise is not None and length >= _HUGE_PAGES_MIN:
            # Only whole huge pages inside the object: the advice covers nothing else.
            first = -(-start // _HUGE_PAGE) * _HUGE_PAGE
            last = (start + length) // _HUGE_PAGE * _HUGE_PAGE
            if last > first:
                self._madvise(first, last - first, self._advice)  # a refusal changes nothing
        array = (self._char * length).from_address(start)
        array.bytes_owner = owner  # type: ignore[attr-defined]
        return owner, memoryview(array).cast("B")


#: Objects this large get huge pages offered (see :class:`_BytesStorage`), 2 MiB each.
_HUGE_PAGES_MIN = 4 << 20
_HUGE_PAGE = 2 << 20

_storage: _BytesStorage | None = None
_storage_tried = sys.implementation.name != "cpython"


def _bytes_storage() -> _BytesStorage | None:
    global _storage, _storage_tried  # made once, on first need
    if not _storage_tried:
        _storage_tried = True
        try:
            _storage = _BytesStorage()
        except Exception:  # no ctypes, or not this CPython's layout: bytearrays then
            _storage = None
    return _storage


#: Frames up to this size are written as one buffer (see :func:`encode_frame`).
COALESCE_LIMIT = 64 * 1024

if TYPE_CHECKING:
    from typing_extensions import Buffer as Segment


# --- the control messages -------------------------------------------------------------
#
# HELLO, INIT, READY and the header of ERROR are JSON objects in segment 0. Their keys are
# declared here once, for the parent and the worker program alike; a key that a version
# may leave out sits in a ``total=False`` sub-class (``NotRequired`` is not in Python
# 3.10's typing, and the worker program has no typing_extensions). Unknown keys are
# ignored on both sides.


if TYPE_CHECKING:
    # Declared for the type checker only: building these classes costs about half a
    # millisecond, which every worker would pay at start-up for nothing at run time.
    from typing import Literal, TypedDict, TypeGuard

    class _HelloRequired(TypedDict):
        protocol: int
        pid: int

    class Hello(_HelloRequired, total=False):
        """HELLO, the worker's first message: the versions and codecs it speaks."""

        #: Every version the worker speaks (version 2); alone, ``protocol`` stands for it.
        protocols: list[int]
        codecs: list[str]
        features: list[str]
        implementation: str
        python: str

    class MainSpec(TypedDict, total=False):
        """Where the parent's ``__main__`` comes from: a module name or a script path."""

        module: str
        path: str

    class IdlePoll(TypedDict, total=False):
        """How long a worker polls for its next call after an answer, and whether adaptively."""

        seconds: float
        adaptive: bool

    class _InitRequired(TypedDict):
        protocol: int
        codec: str

    class Init(_InitRequired, total=False):
        """INIT, the parent's answer to HELLO: the version chosen and how to serve."""

        max_frame_length: int
        sys_path: list[str]
        main: MainSpec | None
        main_ahead: bool
        idle_poll: IdlePoll

    class _ReadyRequired(TypedDict):
        ok: bool

    class Ready(_ReadyRequired, total=False):
        """READY, the end of the handshake: whether the worker can serve, and if not, why."""

        error: str

    #: When an ERROR happened: decoding the request, running the function, encoding the result.
    Stage = Literal["arguments", "call", "result"]

    class _ErrorRequired(TypedDict):
        stage: Stage
        type: str

    class ErrorHeader(_ErrorRequired, total=False):
        """Segment 0 of ERROR; the codec's encoding of the exception may follow it."""

        message: str
        traceback: str
        #: Why the exception object itself is not sent (then no segment follows).
        unserializable: str
        #: The failing item of a BATCH or STREAM (version 2).
        index: int


def encode_control(message: Hello | Init | Ready | ErrorHeader) -> bytes:
    """Encode a control message as the JSON of its segment."""
    return json.dumps(message).encode()


def decode_control(kind: int, segments: Sequence[bytes | bytearray | memoryview]) -> dict[str, Any]:
    """Decode the JSON object of a control message of *kind*, as yet unchecked.

    Raises:
        ProtocolError: not one segment, not JSON, or not a JSON object.
    """
    name = KIND_NAMES.get(kind, str(kind))
    if len(segments) != 1:
        raise ProtocolError(f"{name} must have one segment, not {len(segments)}")
    try:
        message = json.loads(bytes(segments[0]))
    except ValueError as exc:
        raise ProtocolError(f"{name} is not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError(f"{name} must be a JSON object")
    return message


def is_int(value: object) -> TypeGuard[int]:
    """Whether *value* is a JSON integer (``True`` and ``False`` are not)."""
    return isinstance(value, int) and not isinstance(value, bool)


def hello_versions(hello: dict[str, Any]) -> list[int]:
    """Return the protocol versions a HELLO offers that this side speaks too."""
    offered = hello.get("protocols", [hello.get("protocol")])
    return [
        version
        for version in (offered if isinstance(offered, list) else [])
        if is_int(version) and MIN_PROTOCOL_VERSION <= version <= PROTOCOL_VERSION
    ]


def error_index(header: dict[str, Any]) -> int | None:
    """Return the item position an ERROR header names, if it names a valid one."""
    index = header.get("index")
    return index if is_int(index) and index >= 0 else None


class ProtocolError(Exception):
    """A frame broke the protocol: unknown kind, bad counts, oversized or truncated."""


class Frame:
    """One decoded frame: its message kind and its segments."""

    __slots__ = ("kind", "segments")

    def __init__(self, kind: int, segments: list[bytearray | memoryview]) -> None:
        self.kind = kind
        self.segments = segments

    def __repr__(self) -> str:
        return f"Frame(kind={self.kind}, segments={len(self.segments)})"


def encode_frame(kind: int, segments: Sequence[Segment]) -> list[Segment]:
    """Return the buffers that make up one frame, ready for ``os.writev``.

    A frame of at most :data:`COALESCE_LIMIT` bytes comes back as one buffer: a
    ``writev`` of several buffers can wake the reader between them, which costs a
    second wake-up (and, in an event loop, a second trip through it) for every small
    message. Larger frames keep their big buffers as they are, to avoid copying them.
    """
    only = segments[0] if len(segments) == 1 else None
    if isinstance(only, bytes) and len(only) <= COALESCE_LIMIT:
        # The usual small message: header, length and pickle in one bytes object.
        return [ONE_SEGMENT.pack(kind, 0, 1, len(only)) + only]
    if len(segments) > MAX_SEGMENTS:
        raise ProtocolError(f"a frame carries at most {MAX_SEGMENTS} segments")
    views = [s.raw() if isinstance(s, pickle.PickleBuffer) else s for s in segments]
    head = bytearray(HEADER.pack(kind, 0, len(views)))
    total = 0
    for view in views:
        size = memoryview(view).nbytes
        total += size
        head += LENGTH.pack(size)
    if total <= COALESCE_LIMIT:
        for view in views:
            head += view
        return [head]
    return [head, *views]


def encode_frames(frames: Sequence[tuple[int, Sequence[Segment]]]) -> list[Segment]:
    """Return the buffers of several frames sent back to back, joined when small."""
    buffers: list[Segment] = []
    for kind, segments in frames:
        buffers += encode_frame(kind, segments)
    if len(buffers) > 1 and sum(memoryview(b).nbytes for b in buffers) <= COALESCE_LIMIT:
        return [b"".join(buffers)]
    return buffers


def skip_written(buffers: list[Segment], written: int) -> list[Segment]:
    """Return what is left of *buffers* after the first *written* bytes went out."""
    remaining: list[Segment] = []
    for index, buffer in enumerate(buffers):
        view = memoryview(buffer).cast("B")
        if written >= view.nbytes:
            written -= view.nbytes
            continue
        remaining.append(view[written:])
        remaining.extend(buffers[index + 1 :])
        break
    return remaining


def write_frame_blocking(fd: int, kind: int, segments: Sequence[Segment]) -> None:
    """Write one whole frame to a blocking file descriptor."""
    buffers = encode_frame(kind, segments)
    whole = buffers[0]
    if len(buffers) == 1 and type(whole) is bytes:
        written = os.write(fd, whole)
        if written == len(whole):
            return
        buffers = [memoryview(whole)[written:]]
    while buffers:
        buffers = skip_written(buffers, os.writev(fd, buffers))


class FrameReader:
    """Incremental frame decoder that never allocates more than the frame limit.

    Feed it bytes either through :meth:`feed`, or by reading straight into the view that
    :meth:`buffer` returns and then calling :meth:`commit` with the byte count; large
    segments are then read directly into their final buffer, without an extra copy.
    Complete frames queue up in :attr:`frames`.
    """

    def __init__(self, max_frame_length: int = DEFAULT_MAX_FRAME_LENGTH) -> None:
        self.max_frame_length = max_frame_length
        self.frames: deque[Frame] = deque()
        self._scratch = bytearray(_SCRATCH_SIZE)
        self._start = 0
        self._end = 0
        self._kind = -1  # -1: waiting for a header
        self._count = 0
        self._lengths: list[int] = []
        self._segments: list[bytearray | memoryview] = []
        self._filled = 0  # bytes already in the segment being filled
        self._direct = False
        self._kept: list[bytearray] = []
        #: Whether large out-of-band segments may be read into fresh ``bytes`` objects
        #: (see :class:`_BytesStorage`); else every segment is a ``bytearray``.
        self.bytes_in_place = True

    @property
    def mid_frame(self) -> bool:
        """Whether some bytes of an unfinished frame have been received."""
        return self._kind != -1 or self._end > self._start

    def buffer(self) -> memoryview:
        """Return a writable view to read the next bytes into."""
        if self._end == self._start and self._segments:
            segment = self._segments[-1]
            if len(segment) - self._filled >= _SCRATCH_SIZE // 2:
                self._direct = True
                return memoryview(segment)[self._filled :]
        self._direct = False
        if self._end == self._start:
            self._start = self._end = 0
        elif self._end == len(self._scratch):
            leftover = self._end - self._start
            self._scratch[:leftover] = self._scratch[self._start : self._end]
            self._start, self._end = 0, leftover
        return memoryview(self._scratch)[self._end :]

    def commit(self, count: int) -> None:
        """Account for *count* bytes written into the last :meth:`buffer` view."""
        if self._direct:
            self._direct = False
            self._filled += count
            if self._filled == len(self._segments[-1]):
                self._segment_done()
        else:
            self._end += count
            self._parse()

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Decode *data*, however it is split from the rest of the stream."""
        view = memoryview(data).cast("B")
        while view.nbytes:
            target = self.buffer()
            count = min(target.nbytes, view.nbytes)
            target[:count] = view[:count]
            self.commit(count)
            view = view[count:]

    def eof(self) -> None:
        """Signal the end of the stream; raise if it cut a frame short."""
        if self.mid_frame:
            raise ProtocolError("the stream ended in the middle of a frame")

    def _available(self) -> int:
        return self._end - self._start

    def _take(self, count: int) -> memoryview:
        view = memoryview(self._scratch)[self._start : self._start + count]
        self._start += count
        return view

    def _parse(self) -> None:
        while True:
            if self._kind == -1:
                if self._available() < HEADER.size:
                    return
                if self._whole_frame():
                    continue
                kind, flags, count = HEADER.unpack(self._take(HEADER.size))
                if kind not in KIND_NAMES:
                    raise ProtocolError(f"unknown message kind {kind}")
                if flags:
                    raise ProtocolError(f"unknown frame flags {flags:#x}")
                if count > MAX_SEGMENTS:
                    raise ProtocolError(f"{count} segments in one frame (at most {MAX_SEGMENTS})")
                self._kind, self._count = kind, count
                self._lengths = []
                self._segments = []
                self._filled = 0
            if len(self._lengths) < self._count:
                needed = LENGTH.size * self._count
                if self._available() < needed:
                    return
                raw = self._take(needed)
                lengths = [length for (length,) in LENGTH.iter_unpack(raw)]
                total = sum(lengths)
                if total > self.max_frame_length:
                    raise ProtocolError(
                        f"a frame of {total} bytes exceeds the limit of "
                        f"{self.max_frame_length} bytes"
                    )
                self._lengths = lengths
            if not self._fill_segments():
                return

    def _allocate(self, length: int, index: int) -> bytearray | memoryview:
        """Return a buffer for segment *index*: a fresh one, or a large one reused.

        A large out-of-band buffer (any segment after the first) is read into a fresh
        ``bytes`` object where that can be done (see :class:`_BytesStorage`). Else,
        since touching freshly mapped memory costs about as much as copying it, a
        large buffer whose only owner is this reader (its consumer copied it and let it
        go) is filled again instead of allocating a new one.
        """
        if length < _REUSE_MIN or _getrefcount is None:
            return bytearray(length)
        if index and self.bytes_in_place:
            storage = _bytes_storage()
            if storage is not None:
                return storage.make(length)[1]
        for buffer in self._kept:
            # References: the list, this loop's variable and getrefcount's argument.
            if len(buffer) == length and _getrefcount(buffer) <= 3:
                return buffer
        buffer = bytearray(length)
        self._kept.append(buffer)
        while sum(len(kept) for kept in self._kept) > _KEEP_LIMIT:
            del self._kept[0]
        return buffer

    def _whole_frame(self) -> bool:
        """Decode a frame lying entirely in the scratch buffer in one go (the usual case)."""
        scratch, start, available = self._scratch, self._start, self._end - self._start
        if available >= ONE_SEGMENT.size:
            kind, flags, count, length = ONE_SEGMENT.unpack_from(scratch, start)
            if count == 1 and not flags and kind in KIND_NAMES:
                stop = start + ONE_SEGMENT.size + length
                if length > self.max_frame_length or stop > self._end:
                    return False
                self._start = stop
                self.frames.append(Frame(kind, [scratch[start + ONE_SEGMENT.size : stop]]))
                return True
        elif available < HEADER.size:
            return False
        kind, flags, count = HEADER.unpack_from(scratch, start)
        table_end = start + HEADER.size + LENGTH.size * count
        if kind not in KIND_NAMES or flags or count > MAX_SEGMENTS or table_end > self._end:
            return False  # the careful path reports errors and waits for more
        lengths = struct.unpack_from(f">{count}Q", scratch, start + HEADER.size)
        total = sum(lengths)
        if total > self.max_frame_length or table_end + total > self._end:
            return False
        segments: list[bytearray | memoryview] = []
        position = table_end
        for length in lengths:
            segments.append(scratch[position : position + length])
            position += length
        self._start = position
        self.frames.append(Frame(kind, segments))
        return True

    def _fill_segments(self) -> bool:
        """Move scratch bytes into segments; return whether the frame completed."""
        segments = self._segments
        while len(segments) < self._count or (segments and self._filled < len(segments[-1])):
            if not self._segments or self._filled == len(self._segments[-1]):
                index = len(self._segments)
                self._segments.append(self._allocate(self._lengths[index], index))
                self._filled = 0
                if not self._lengths[len(self._segments) - 1]:
                    continue
            segment = self._segments[-1]
            count = min(len(segment) - self._filled, self._available())
            if not count:
                return False
            segment[self._filled : self._filled + count] = self._take(count)
            self._filled += count
        self._finish()
        return True

    def _segment_done(self) -> None:
        if len(self._segments) == self._count:
            self._finish()
        self._parse()

    def _finish(self) -> None:
        self.frames.append(Frame(self._kind, self._segments))
        self._kind = -1
        self._count = 0
        self._lengths = []
        self._segments = []
        self._filled = 0


def read_frame_blocking(fd: int, reader: FrameReader) -> Frame | None:
    """Read from a blocking descriptor until one frame is complete; ``None`` at EOF."""
    while not reader.frames:
        count = os.readv(fd, [reader.buffer()])
        if not count:
            reader.eof()
            return None
        reader.commit(count)
    return reader.frames.popleft()


# --- the built-in pickle codecs ------------------------------------------------------
#
# Segment 0 is the pickle stream (protocol 5); every further segment is one out-of-band
# buffer, in the order the pickle stream refers to them. The pickled object is a pair
# ``(value, lifted)``: exact ``bytes`` and ``bytearray`` objects never reach
# ``reducer_override``, so large ones found at the top of the value (or as items of a
# top-level tuple or list, one level deeper for a call's arguments) are replaced by a
# ``PickleBuffer`` before pickling, and ``lifted`` lists the paths to turn back into
# ``bytes`` or ``bytearray`` on the other side. Memoryviews go through
# ``reducer_override``, wherever they are.

Path = tuple[int, ...]


def _reduce_buffer(obj: object) -> Any:
    if type(obj) is memoryview:
        view = obj
        if not view.c_contiguous:
            view = memoryview(view.tobytes()).cast("B")
            if obj.format != "B" or obj.ndim != 1:
                view = view.cast(obj.format, list(obj.shape or ()))  # type: ignore[call-overload]
        if view.ndim == 1 and view.format == "B":
            return memoryview, (pickle.PickleBuffer(view),)
        return memoryview.cast, (view.cast("B"), view.format, list(view.shape or ()))
    return NotImplemented


def _lift(value: object, depth: int, path: Path, lifted: list[Path]) -> object:
    # The last item of a lifted path says what to rebuild: 0 for bytes, 1 for bytearray.
    if type(value) is bytes or type(value) is bytearray:
        if len(value) >= OUT_OF_BAND_THRESHOLD:
            lifted.append((*path, int(type(value) is bytearray)))
            return pickle.PickleBuffer(value)
        return value
    if depth and isinstance(value, (tuple, list)) and type(value) in (tuple, list):
        before = len(lifted)
        items = [_lift(item, depth - 1, (*path, index), lifted) for index, item in enumerate(value)]
        if len(lifted) != before:
            return tuple(items) if type(value) is tuple else items
    return value


# Values of these types pickle the same with or without ``reducer_override`` and hold no
# buffer to send out of band, so :meth:`PickleCodec.dumps` may use plain ``pickle.dumps``.
_PLAIN_TYPES = frozenset(
    {int, float, complex, str, bool, type(None), types.FunctionType, types.BuiltinFunctionType}
)


#: How deeply nested tuples and lists may be for :func:`_plain` to look into them.
_PLAIN_NESTING = 3

#: Tuples and lists longer than this are not scanned before a first try at pickling (see
#: :meth:`PickleCodec.dumps`): a scan in Python costs more per item than the C pickler.
_SCAN_LIMIT = 16

#: The C pickler hands its stream to its file at the end of ``dump``, and before that
#: only in frames of at least this many bytes, or to pass on a bytes-like object as big.
_FRAME_BYTES = 64 * 1024


def _plain(value: object, depth: int, nesting: int = 0, whole: bool = True) -> bool | None:
    """Whether *value* needs neither lifting nor the out-of-band pickler (a cheap scan).

    *depth* is what :func:`_lift` would be given for *value*: a large ``bytes`` it
    reaches (depth 0 or more) is lifted, one inside a container it does not open
    (negative depth) is pickled in the stream either way, so it is plain there. A large
    ``bytearray`` never is (the out-of-band pickler sends it as a buffer). Containers
    nested deeper than a few levels take the general path. Unless *whole*, a tuple or
    list longer than ``_SCAN_LIMIT`` is not looked into: the answer is then ``None``.
    """
    kind = type(value)
    if kind in _PLAIN_TYPES:
        return True
    if kind is bytes:
        return depth < 0 or len(value) < OUT_OF_BAND_THRESHOLD  # type: ignore[arg-type]
    if kind is bytearray:
        return len(value) < OUT_OF_BAND_THRESHOLD  # type: ignore[arg-type]
    if (kind is not tuple and kind is not list) or nesting > _PLAIN_NESTING:
        return False
    if len(value) > _SCAN_LIMIT:  # type: ignore[arg-type]
        if not whole:
            return None
        # Items of plain types only (a list of numbers, of strings): one pass in C.
        if _PLAIN_TYPES.issuperset(map(type, value)):  # type: ignore[call-overload]
            return True
    # A loop with the common cases inline, not all() over a generator: this runs on
    # every call, and over every item of a map's chunk (tuples of plain arguments).
    for item in value:  # type: ignore[attr-defined]
        kind = type(item)
        if kind in _PLAIN_TYPES:
            continue
        if kind is tuple:
            for member in item:
                if type(member) not in _PLAIN_TYPES:
                    break
            else:
                continue
        plain = _plain(item, depth - 1, nesting + 1, whole)
        if not plain:
            return plain
    return True


class _OverOneFrameError(Exception):
    """Stops :func:`_pickle_within_a_frame`: the pickle has grown past one frame."""


class _OneWrite:
    """A file for the C pickler that takes one write of less than a frame, and no more."""

    __slots__ = ("data",)

    def __init__(self) -> None:
        self.data: bytes | None = None

    def write(self, data: bytes) -> None:
        if self.data is not None or len(data) >= _FRAME_BYTES:
            raise _OverOneFrameError
        self.data = data


def _pickle_within_a_frame(value: object) -> bytes | None:
    """Pickle *value* with the plain pickler if it fits in one frame, else ``None``.

    ``None`` as well for what the plain pickler refuses (a memoryview, a function it
    cannot name...): the general path deals with it. The work thrown away is bounded
    by one frame's worth of pickling, whatever the size of *value*.
    """
    sink = _OneWrite()
    try:
        pickle.Pickler(sink, protocol=5).dump(value)
    except Exception:
        return None
    return sink.data


def _restore(value: Any, path: Path) -> object:
    if len(path) == 1:
        # The receiving side passes memoryviews of its segments: a bytearray, or the
        # view of a fresh bytes object (see _BytesStorage), which is then the value.
        # The other type, or a buffer of some other owner, is copied.
        owner = value.obj
        if path[0]:
            return owner if type(owner) is bytearray else bytearray(value)
        made = getattr(owner, "bytes_owner", None)
        return made if type(made) is bytes and len(made) == value.nbytes else bytes(value)
    head, rest = path[0], path[1:]
    if type(value) is list:
        value[head] = _restore(value[head], rest)
        return value
    items = list(value)
    items[head] = _restore(items[head], rest)
    return tuple(items)


def _make_pickler_class(base: type[pickle.Pickler]) -> type[pickle.Pickler]:
    class OutOfBandPickler(base):  # type: ignore[valid-type,misc]
        def reducer_override(self, obj: object) -> Any:
            reduced = _reduce_buffer(obj)
            if reduced is NotImplemented:
                parent = getattr(super(), "reducer_override", None)
                if parent is not None:
                    return parent(obj)
            return reduced

    return OutOfBandPickler


class _MainAwareUnpickler(pickle.Unpickler):
    """Resolves ``__mp_main__`` (a worker's name for the parent's main module) to ``__main__``."""

    def find_class(self, module: str, name: str) -> Any:
        if module == "__mp_main__" and "__mp_main__" not in sys.modules:
            module = "__main__"
        return super().find_class(module, name)


class PickleCodec:
    """Pickle protocol 5 with out-of-band buffers; the default codec of both sides."""

    name = "pickle"

    def __init__(self, pickler_class: type[pickle.Pickler] | None = None) -> None:
        # Only the standard pickler may take the shortcut: another one (cloudpickle)
        # pickles some functions differently.
        self._standard = pickler_class is None
        self._pickler_class = pickler_class or _make_pickler_class(pickle.Pickler)

    def dumps(self, value: object, depth: int = 1) -> list[Segment]:
        """Serialize *value* into a pickle stream and its out-of-band buffers."""
        if self._standard:
            plain = _plain(value, depth, whole=False)
            if plain:
                return [pickle.dumps((value, []), protocol=5)]
            if plain is None:
                # A long tuple or list (a map's results, a call's list of numbers): the
                # pickle comes first, for a scan in Python costs more than the pickling.
                # A pickle under the threshold holds no buffer worth sending out of
                # band. A bigger one is kept, or made, if the whole scan then finds
                # nothing to lift. Anything else is pickled again below (a __reduce__
                # may then run twice).
                data = _pickle_within_a_frame((value, []))
                if data is not None and len(data) < OUT_OF_BAND_THRESHOLD:
                    return [data]
                if _plain(value, depth):
                    return [data or pickle.dumps((value, []), protocol=5)]
        lifted: list[Path] = []
        value = _lift(value, depth, (), lifted)
        segments: list[Segment] = []
        stream = io.BytesIO()
        self._pickler_class(stream, protocol=5, buffer_callback=segments.append).dump(
            (value, lifted)
        )
        return [stream.getvalue(), *segments]

    def loads(self, segments: Sequence[bytes | bytearray | memoryview]) -> object:
        """Rebuild the value that :meth:`dumps` turned into *segments*."""
        if not segments:
            raise ProtocolError("a pickled message needs at least one segment")
        buffers = [memoryview(s) for s in segments[1:]] if len(segments) > 1 else ()
        try:
            value, lifted = pickle.loads(segments[0], buffers=buffers)
        except (ImportError, AttributeError):
            # Perhaps a name from the worker's __mp_main__, which the parent knows as
            # __main__; the plain (faster) unpickler goes first since that is rare.
            value, lifted = _MainAwareUnpickler(io.BytesIO(segments[0]), buffers=buffers).load()
        for path in lifted:
            value = _restore(value, tuple(path))
        return value


def cloudpickle_codec() -> PickleCodec:
    """Return the pickle codec built on cloudpickle's pickler (lambdas, closures)."""
    import cloudpickle

    return PickleCodec(_make_pickler_class(cloudpickle.Pickler))


def builtin_codec(name: str) -> PickleCodec:
    """Return the built-in codec called *name* (``pickle`` or ``cloudpickle``)."""
    if name == "pickle":
        return PickleCodec()
    if name == "cloudpickle":
        return cloudpickle_codec()
    raise ValueError(f"no built-in codec named {name!r}")


def import_object(reference: str) -> Any:
    """Import ``"package.module:attribute.path"`` and return the object it names."""
    import importlib

    module_name, _, attribute = reference.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attribute.split(".") if attribute else ():
        obj = getattr(obj, part)
    return obj
