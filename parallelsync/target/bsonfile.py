"""A `file:DIR` target: the collection as a mongorestore-compatible `.bson` file.

The same promises as a MongoDB target, on a file system: workers write one file per range in a
hidden temp directory (a retried range truncates its own file, so nothing is written twice), and
the finished file replaces `DIR/<collection>.bson` with one atomic `os.replace`. On failure the
temp directory is removed and the old file stays as it was. Load it with
`mongorestore --db DB --collection NAME DIR/<collection>.bson`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from parallelsync.errors import TargetError, UsageError, VerifyError
from parallelsync.transcode.batch import EncodedBatch

PREFIX = "file:"


def target_dir(uri: str) -> Path:
    path = uri[len(PREFIX) :]
    if not path:
        raise UsageError("--target file: needs a directory, e.g. file:/data/export")
    return Path(path)


def temp_dir(directory: Path, temp_name: str) -> Path:
    return directory / f".{temp_name}.parts"


def range_path(parts: Path, range_id: int) -> Path:
    return parts / f"{range_id:06d}.bson"


class FileSink:
    """Per-range files; `begin_range` opens (and truncates) the file of the range being copied."""

    def __init__(self, parts: Path) -> None:
        self._parts = parts
        self._file: BinaryIO | None = None

    def begin_range(self, range_id: int) -> None:
        self.end_range()
        try:
            self._parts.mkdir(parents=True, exist_ok=True)
            self._file = open(range_path(self._parts, range_id), "wb")  # noqa: SIM115
        except OSError as exc:
            raise TargetError(f"cannot write {self._parts}: {exc}") from None

    def end_range(self) -> None:
        if self._file is not None:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()
            self._file = None

    def insert(self, batch: EncodedBatch, *, allow_duplicates: bool) -> int:
        assert self._file is not None, "begin_range first"
        try:
            self._file.write(batch.data)
        except OSError as exc:
            raise TargetError(f"writing {self._file.name} failed: {exc}") from None
        return batch.rows

    def close(self) -> None:
        self.end_range()


def assemble(directory: Path, collection: str, parts: Path, expected_rows: int) -> Path:
    """Concatenate the range files, check the document count, and swap the result into place."""
    final = directory / f"{collection}.bson"
    partial = parts / "assembled.bson.tmp"
    count = 0
    try:
        with open(partial, "wb") as out:
            for part in sorted(parts.glob("*.bson")):
                data = part.read_bytes()
                pos = 0
                while pos < len(data):
                    pos += int.from_bytes(data[pos : pos + 4], "little")
                    count += 1
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if count != expected_rows:
            raise VerifyError(
                f"the assembled file holds {count} documents but {expected_rows} rows were read; "
                f"{final} is unchanged"
            )
        os.replace(partial, final)
    except OSError as exc:
        raise TargetError(f"writing {final} failed: {exc}; it is unchanged") from None
    finally:
        shutil.rmtree(parts, ignore_errors=True)
    return final


def discard(parts: Path) -> None:
    shutil.rmtree(parts, ignore_errors=True)
