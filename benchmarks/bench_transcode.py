"""Transcode throughput: reference (pure Python) vs fast (numba) path, on in-memory COPY data.

Tables: (a) 7 fixed/text columns (int8, int4, float8, text ~37 chars, timestamptz, bool, uuid);
(b) the 9-column mix adding numeric(12,2) and a small jsonb. The input is synthesised as binary
COPY tuples (header included) in one buffer; each measurement encodes the whole buffer in chunks
of about `--chunk-mb` (the worker's buffer size). Median of `--repeat` runs.

    python benchmarks/bench_transcode.py [--rows 200000] [--repeat 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import struct
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from parallelsync.transcode import DocumentEncoder, header_length
from parallelsync.transcode.model import Codec, FieldNode, Layout
from tests.unit.transcode import copy_helpers as h

SEVEN = ("int8", "int4", "float8", "text", "timestamptz", "bool", "uuid")
NINE = (*SEVEN, "numeric", "jsonb")


def make_layout(codecs: tuple[str, ...]) -> Layout:
    names = ["_id", "qty", "price", "label", "created", "active", "token", "amount", "attrs"]
    nodes = tuple(FieldNode(names[i], i, Codec(name)) for i, name in enumerate(codecs))
    return Layout(nodes=nodes, ncolumns=len(codecs))


def make_chunks(codecs: tuple[str, ...], rows: int, chunk_bytes: int) -> tuple[list[bytes], int]:
    """COPY tuples split at tuple boundaries into ~chunk_bytes buffers (header in the first)."""
    r = random.Random(42)
    chunks: list[bytes] = []
    current = bytearray(h.HEADER)
    for i in range(rows):
        fields: list[bytes] = [
            h.p_int8(i),
            h.p_int4(r.randint(0, 1000)),
            h.p_float8(r.random() * 1000),
            f"customer-{i:08d}-{uuid.UUID(int=r.getrandbits(128)).hex[:18]}".encode(),
            h.p_timestamp(r.randint(0, 10**15)),
            h.p_bool(i % 2 == 0),
            uuid.UUID(int=r.getrandbits(128)).bytes,
        ]
        if len(codecs) == 9:
            fields.append(h.p_numeric(f"{r.randint(0, 10**10)}.{r.randint(0, 99):02d}"))
            fields.append(
                h.p_jsonb(json.dumps({"color": r.choice(["red", "blue"]), "size": r.randint(1, 9),
                                      "tags": ["a", "b"]}))
            )  # fmt: skip
        current += h.row(*fields)
        if len(current) >= chunk_bytes:
            chunks.append(bytes(current))
            current = bytearray()
    current += struct.pack(">h", -1)
    chunks.append(bytes(current))
    return chunks, sum(len(c) for c in chunks)


def run_once(encoder: DocumentEncoder, chunks: list[bytes]) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds of this process, rows)."""
    wall, cpu = time.perf_counter(), time.process_time()
    rows = 0
    for index, chunk in enumerate(chunks):
        start = header_length(chunk) if index == 0 else 0
        rows += encoder.encode(chunk, start).rows
    return time.perf_counter() - wall, time.process_time() - cpu, rows


def measure(
    codecs: tuple[str, ...], rows: int, reference_rows: int, repeat: int, chunk_bytes: int
) -> dict[str, object]:
    layout = make_layout(codecs)
    result: dict[str, object] = {"columns": list(codecs)}
    # the reference path is ~20-60x slower: a smaller input keeps the run short
    for name, fast, nrows in (("reference", False, reference_rows), ("fast", True, rows)):
        chunks, nbytes = make_chunks(codecs, nrows, chunk_bytes)
        encoder = DocumentEncoder(layout, fast=fast)
        encoder.encode(chunks[0], header_length(chunks[0]))  # JIT load / warm caches
        walls, cpus = [], []
        for _ in range(repeat):
            wall, cpu, encoded = run_once(encoder, chunks)
            assert encoded == nrows
            walls.append(wall)
            cpus.append(cpu)
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        result[name] = {
            "rows": nrows,
            "copy_bytes": nbytes,
            "seconds": wall,
            "cpu_seconds": cpu,
            "rows_per_s": nrows / wall,
            "rows_per_cpu_s": nrows / cpu,
            "mb_per_s": nbytes / wall / 1e6,
            "us_per_row": wall / nrows * 1e6,
        }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    parser.add_argument("--reference-rows", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--chunk-mb", type=float, default=4.0)
    parser.add_argument("--json", default=str(Path(__file__).parent / "results" / "transcode.json"))
    args = parser.parse_args()
    chunk_bytes = int(args.chunk_mb * 1024 * 1024)
    results = {
        table: measure(codecs, args.rows, args.reference_rows, args.repeat, chunk_bytes)
        for table, codecs in (("seven_columns", SEVEN), ("nine_columns", NINE))
    }
    print(
        f"{'table':<15} {'path':<10} {'rows/s':>11} {'rows/cpu-s':>11} {'MB/s':>8} "
        f"{'µs/row':>7} {'speedup':>8}"
    )
    for table, result in results.items():
        ref = result["reference"]
        assert isinstance(ref, dict)
        for path in ("reference", "fast"):
            m = result[path]
            assert isinstance(m, dict)
            speedup = m["rows_per_s"] / ref["rows_per_s"]
            print(
                f"{table:<15} {path:<10} {m['rows_per_s']:>11,.0f} {m['rows_per_cpu_s']:>11,.0f} "
                f"{m['mb_per_s']:>8.1f} {m['us_per_row']:>7.2f} {speedup:>7.1f}x"
            )
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "repeat": args.repeat,
        "chunk_bytes": chunk_bytes,
    }
    out.write_text(json.dumps({"meta": meta, "results": results}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
