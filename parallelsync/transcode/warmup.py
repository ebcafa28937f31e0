"""Compile the numba kernels once and store them in numba's on-disk cache.

Cold compilation costs ~40 s of CPU; after it every process loads the cached machine code in
about a second. `scripts/setup.sh` runs this after installing, so the first copy (and every worker
of it) does not pay the compile. Run it again after upgrading numba or parallelsync:

    python -m parallelsync.transcode.warmup
"""

from __future__ import annotations

import struct
import sys
import time

from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import Codec, FieldNode, Layout

# One column of every kind the kernels handle natively, so every kernel specialisation compiles.
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
    # Enough rows to pass the encoder's small-input shortcut to the reference path.
    buf = b"PGCOPY\n\xff\r\n\x00" + bytes(8) + row * 200
    encoder = DocumentEncoder(layout, fast=True)
    batch = encoder.encode(buf, 19)
    assert batch.rows == 200
    return time.monotonic() - started


if __name__ == "__main__":
    print(f"parallelsync: numba kernels ready in {warm():.1f} s", file=sys.stderr)
