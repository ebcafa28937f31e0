"""A `file:DIR` target: the collection as a mongorestore-compatible `.bson` file.

The same promises as a MongoDB target, on a file system: workers write one file per range in a
hidden temp directory (a retried range truncates its own file, so nothing is written twice), and
the finished file replaces `DIR/<collection>.bson` with one atomic `os.replace`, followed by
`DIR/<collection>.metadata.json` (the indexes, targets/metadata.py). On failure the temp
directory is removed and the old files stay as they were. Load it with
`mongorestore --db DB --collection NAME DIR/<collection>.bson` (which reads the metadata file
next to it and builds its indexes).

Assembly streams: the first part becomes the output and every other part is appended to it and
removed, so memory stays flat and the disk holds at most the output plus one part.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from pathlib import Path
from typing import BinaryIO

from parallelsync.errors import LockedError, TargetError, UsageError
from parallelsync.targets import metadata
from parallelsync.targets.base import TEMP_MARKER, BaseTarget, IdFilter, Log, SinkSpec, TargetKind
from parallelsync.transcode.batch import EncodedBatch

PREFIX = "file:"
# Read size when walking part files for the count: large enough that the walk, not the reads,
# costs the time; small enough to stay negligible next to a worker's batches.
CHUNK = 1 << 20


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


def count_documents(path: Path) -> int:
    """Documents in a file of concatenated BSON documents, by walking their length prefixes."""
    count = pos = 0
    with open(path, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        while pos < size:
            fh.seek(pos)
            block = fh.read(CHUNK)
            if len(block) < 4:
                break
            off = 0
            while off + 4 <= len(block):
                length = int.from_bytes(block[off : off + 4], "little")
                if length < 5:
                    raise TargetError(f"{path} holds a malformed document at byte {pos + off}")
                off += length
                count += 1
            pos += off
    if pos != size:
        raise TargetError(f"{path} ends inside a document")
    return count


def _append(src: Path, out: BinaryIO) -> None:
    with open(src, "rb") as fh:
        size = os.fstat(fh.fileno()).st_size
        copied = 0
        try:
            while copied < size:
                n = os.copy_file_range(fh.fileno(), out.fileno(), size - copied)
                if n == 0:
                    break
                copied += n
        except OSError:
            fh.seek(copied)
            out.seek(0, os.SEEK_END)
            shutil.copyfileobj(fh, out, CHUNK)


class FileTarget(BaseTarget):
    kind: TargetKind = "file"

    def __init__(self, uri: str, collection: str) -> None:
        self.directory = target_dir(uri)
        self.collection = collection
        self.final = self.directory / f"{collection}.bson"
        self.metadata = metadata.metadata_path(self.directory, collection)
        self.display = str(self.final)
        self._lock: tuple[int, Path, int] | None = None
        self._make_directory(uri)

    def _make_directory(self, uri: str) -> None:
        """The directory must be writable; it is created when only its last part is missing."""
        d = self.directory
        if not d.exists():
            if not d.parent.is_dir():
                raise UsageError(
                    f"--target {uri}: {d.parent} does not exist (create it, or choose another "
                    "directory; only the last part of the path is created)"
                )
            try:
                d.mkdir()
            except OSError as exc:
                raise UsageError(f"--target {uri}: cannot create {d}: {exc.strerror}") from None
        if not d.is_dir():
            raise UsageError(f"--target {uri}: {d} is not a directory")
        if not os.access(d, os.W_OK):
            raise UsageError(f"--target {uri}: {d} is not writable by this user")

    # ---------------------------------------------------------------- one run per target
    def lock(self, job_id: str, *, resume: bool) -> None:
        """One run per target file, as the MongoDB lease does: `DIR/.<collection>.lock`.

        An exclusive flock on that file, which the kernel releases when the process dies (so a
        crashed run never blocks the next one), and which names its holder for the message.
        The fencing check before the swap compares the file's inode: a lock file removed and
        taken by another run since is not ours any more."""
        path = self.directory / f".{self.collection}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace").strip() or "{}"
            os.close(fd)
            try:
                who = json.loads(holder)
            except ValueError:
                who = {}
            raise LockedError(
                f"target {self.final} is locked by job {who.get('job_id')} (owner "
                f"{who.get('owner')}): wait for it to finish; the lock goes with its process"
            ) from None
        os.ftruncate(fd, 0)
        owner = {"job_id": job_id, "owner": f"{socket.gethostname()}:{os.getpid()}"}
        os.write(fd, json.dumps(owner).encode())
        self._lock = (fd, path, os.fstat(fd).st_ino)

    def unlock(self) -> None:
        held = self._lock
        if held is None:
            return
        fd, path, inode = held
        try:
            if path.exists() and path.stat().st_ino == inode:
                path.unlink()
        finally:
            os.close(fd)  # releases the flock
            self._lock = None

    def _still_held(self) -> bool:
        held = self._lock
        if held is None:
            return True  # never locked (a test driving the target directly)
        _, path, inode = held
        return path.exists() and path.stat().st_ino == inode

    def close(self) -> None:
        self.unlock()

    # ---------------------------------------------------------------- the temp parts
    def remove_leftovers(self, keep: str, job_id: str, log: Log) -> None:
        # We hold the target's lock, so any parts directory for it belongs to a dead run.
        for parts in self.directory.glob(f".{self.collection}{TEMP_MARKER}*.parts"):
            if parts != temp_dir(self.directory, keep):
                shutil.rmtree(parts, ignore_errors=True)
                log(f"removed stale temp parts {parts.name} left by an earlier run")

    def prepare(self, temp: str) -> None:
        # An unreadable old metadata file fails the run now, not after the whole copy.
        metadata.secondary_indexes(self.metadata)
        # An empty table gives an empty file: the parts directory exists even without ranges.
        temp_dir(self.directory, temp).mkdir(exist_ok=True)

    def sink_spec(self, temp: str) -> SinkSpec:
        return SinkSpec("file", str(self.directory), "", temp)

    def count(self, name: str, id_filter: IdFilter | None = None) -> int | None:
        parts = temp_dir(self.directory, name)
        if not parts.is_dir():
            return 0
        return sum(count_documents(p) for p in sorted(parts.glob("*.bson")))

    def final_count(self) -> int | None:
        return count_documents(self.final) if self.final.exists() else 0

    def seal(self, temp: str) -> None:
        """The new metadata file in the parts directory: `_id_` and the old file's indexes."""
        doc = metadata.document(self.collection, metadata.secondary_indexes(self.metadata))
        metadata.write(temp_dir(self.directory, temp) / "metadata.json.tmp", doc)

    def swap(self, temp: str, log: Log) -> str:
        """Concatenate the range files and replace the final file atomically, then the metadata.

        Two renames, so a crash between them leaves the new data with the old metadata file:
        the new one holds the old one's indexes plus `_id_`, so both describe the same indexes."""
        if not self._still_held():
            raise TargetError(
                f"the lock file of {self.final} was removed or taken by another run before "
                "the swap; nothing was swapped"
            )
        parts = temp_dir(self.directory, temp)
        assembled = parts / "assembled.bson.tmp"
        meta = parts / "metadata.json.tmp"
        if not meta.exists():
            self.seal(temp)
        try:
            with open(assembled, "ab") as out:
                for part in sorted(parts.glob("*.bson")):
                    _append(part, out)
                    part.unlink()  # the disk never holds the data twice beyond one part
                out.flush()
                os.fsync(out.fileno())
            os.replace(assembled, self.final)
            os.replace(meta, self.metadata)
        except OSError as exc:
            raise TargetError(f"writing {self.final} failed: {exc}; it is unchanged") from None
        finally:
            shutil.rmtree(parts, ignore_errors=True)
        log(f"wrote {self.final} and {self.metadata.name}")
        return ""

    def discard(self, temp: str) -> None:
        shutil.rmtree(temp_dir(self.directory, temp), ignore_errors=True)
