"""The pickle codec of the worker protocol, for codecs that build on it.

A serializer has two halves: the ``Serializer`` in the parent, and the *codec* named by
its ``worker_codec``, which runs inside every worker. This module hands out the codec
that ``PickleSerializer`` runs there (pickle protocol 5, large buffers out of band), so
that a third-party codec builds on it by subclassing or wrapping it, and is named as
``worker_codec = "my_package.codec:ZlibPickleCodec"``:

```python
import zlib

from procio_workers.codecs import PickleCodec


class ZlibPickleCodec(PickleCodec):
    def dumps(self, value, depth=1):
        stream, *buffers = super().dumps(value, depth)
        return [zlib.compress(stream, 1), *buffers]

    def loads(self, segments):
        stream, *buffers = segments
        return super().loads([zlib.decompress(stream), *buffers])
```

``PickleCodec().dumps(value, depth=1)`` returns the pickle stream followed by one
segment per out-of-band buffer. Memoryviews and other buffers of at least
``OUT_OF_BAND_THRESHOLD`` bytes go out of band wherever they are; exact ``bytes`` and
``bytearray`` objects only as deep as *depth* reaches (``1``: the value, and the items
of a tuple or list it is; ``2``: one level further, as a call ``(func, args)`` needs
for its arguments). ``loads(segments)`` rebuilds the value from the segments:
``bytearray`` objects in a worker, ``memoryview`` objects in the parent.

Why a worker may import this module: the worker program imports only the standard
library, so that a worker starts about as fast as a bare interpreter. This module
imports nothing else, and neither does ``import procio_workers`` (the package loads its
other names, which need anyio, on first use). The codec itself lives in the wire module,
which the worker program loads by file path under a name of its own; importing this
module in a worker loads a second copy of it under its package name. Both copies write
and read the same bytes, so a codec built on this one talks to a parent that uses the
built-in serializer's codec, and the other way round; only ``isinstance`` across the two
copies does not hold, and nothing the protocol carries depends on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Final, Protocol, runtime_checkable

from . import _wire
from ._wire import PickleCodec as PickleCodec

if TYPE_CHECKING:
    from typing_extensions import Buffer

__all__ = ["Codec", "PickleCodec", "OUT_OF_BAND_THRESHOLD"]

OUT_OF_BAND_THRESHOLD: Final[int] = _wire.OUT_OF_BAND_THRESHOLD
"""Size in bytes from which ``PickleCodec`` sends a buffer out of band (32 KiB)."""


@runtime_checkable
class Codec(Protocol):
    """What a worker codec provides: the worker half of a serializer.

    ``worker_codec = "module:attribute"`` names a zero-argument factory (usually the
    class itself) whose product has these two methods. The worker calls ``loads`` on
    each call it receives (a pair ``(function, arguments)``; for a batch of a map, the
    function and a list of argument tuples) and ``dumps`` on the function's result, on
    a list of results or of a generator's items, or on the exception raised.
    ``PickleCodec`` follows this protocol.
    """

    def dumps(self, value: object, /) -> Sequence[Buffer]:
        """Encode *value* into segments: the payload first, then any out-of-band buffers."""
        ...

    def loads(self, segments: Sequence[bytearray], /) -> object:
        """Decode the segments of one message (in a worker: ``(function, arguments)``)."""
        ...
