"""A start-up check of the transcoder (it needs no warm-up: the kernel is compiled at install).

`warm()` encodes one small batch with every native kind through the implementation a worker will
use and returns the seconds it took (about a millisecond), so a broken build shows at start-up,
not in the first batch. It remains for the workers and the fork server's preload, which called it
to load numba's kernels when the transcoder was JIT-compiled.

    python -m parallelsync.transcode.warmup      # prints the implementation and the time
"""

from __future__ import annotations

import struct
import sys
import time

from parallelsync.transcode import impl
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Codec, FieldNode, Layout

# One column of every kind the kernel writes natively, plus its numeric and jsonb cells.
_COLUMNS: tuple[tuple[str, bytes], ...] = (
    ("int8", struct.pack("!q", 1)),
    ("int4", struct.pack("!i", 2)),
    ("int2", struct.pack("!h", 3)),
    ("float8", struct.pack("!d", 1.5)),
    ("float4", struct.pack("!f", 2.5)),
    ("bool", b"\x01"),
    ("text", b"warm"),
    ("bytea", b"\x00\x01"),
    ("uuid", bytes(range(16))),
    ("timestamptz", struct.pack("!q", 0)),
    ("timestamp", struct.pack("!q", 0)),
    ("date", struct.pack("!i", 0)),
    ("numeric", struct.pack("!hhHhh", 1, 0, 0, 0, 12)),
    ("jsonb", b'\x01{"a": [1, 2.5, "x", null, true]}'),
    ("oid", struct.pack("!I", 7)),
)


def warm() -> float:
    started = time.monotonic()
    layout = Layout(
        tuple(
            FieldNode("_id" if i == 0 else f"c{i}", i, Codec(name))
            for i, (name, _) in enumerate(_COLUMNS)
        ),
        len(_COLUMNS),
    )
    row = struct.pack("!h", len(_COLUMNS)) + b"".join(
        struct.pack("!i", len(v)) + v for _, v in _COLUMNS
    )
    buf = b"PGCOPY\n\xff\r\n\x00" + bytes(8) + row * 20
    batch = DocumentEncoder(layout).encode(buf, 19)
    if batch.rows != 20:
        raise RuntimeError(f"transcoder self-check encoded {batch.rows} of 20 rows")
    return time.monotonic() - started


if __name__ == "__main__":
    seconds = warm()
    print(
        f"parallelsync: transcoder {impl.IMPL!r} ready in {seconds * 1000:.1f} ms", file=sys.stderr
    )
