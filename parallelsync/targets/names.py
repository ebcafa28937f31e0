"""MongoDB's rules for database and collection names, checked before anything connects.

A name the server (or pymongo) would refuse must fail as a usage error naming the rule, before
the snapshot, the lock or the job document exist: found only at the first write, it cost a whole
snapshot and left a FAILED job behind. The rules are MongoDB's documented limits
(https://www.mongodb.com/docs/manual/reference/limits/#naming-restrictions):

- a database name is not empty, is shorter than 64 bytes and contains none of `/\\. "$*<>:|?`
  (the Windows set, which is a superset of the Unix one: a dump must restore anywhere) nor NUL;
- a collection name is not empty, contains neither `$` nor NUL and does not start with
  `system.`;
- a namespace `db.collection` is at most 255 bytes. The tool's temp collection is the longest
  name a run creates (`<collection>__psync_tmp_<job id>`), so the target name must leave room
  for it.
"""

from __future__ import annotations

from parallelsync.errors import UsageError
from parallelsync.targets.base import JOB_ID_LENGTH, TEMP_MARKER

DB_MAX_BYTES = 63  # "fewer than 64 bytes"
NAMESPACE_MAX_BYTES = 255
DB_FORBIDDEN = '/\\. "$*<>:|?\0'


def _size(name: str) -> int:
    return len(name.encode("utf-8", "surrogatepass"))


def check_db_name(db: str, flag: str = "--db") -> None:
    if not db:
        raise UsageError(f"{flag} is required: the target database name")
    bad = sorted({c for c in db if c in DB_FORBIDDEN})
    if bad:
        shown = " ".join("NUL" if c == "\0" else "space" if c == " " else c for c in bad)
        raise UsageError(
            f"{flag} {db!r}: MongoDB database names may not contain {shown} "
            f'(forbidden: / \\ . space " $ * < > : | ? NUL); choose another {flag}'
        )
    if _size(db) > DB_MAX_BYTES:
        raise UsageError(
            f"{flag} {db[:20]!r}... is {_size(db)} bytes: MongoDB database names must be "
            f"shorter than 64 bytes; choose a shorter {flag}"
        )


def check_collection_name(flag: str, name: str, db: str, *, temp: bool = False) -> None:
    """`temp`: the run also creates `<name>__psync_tmp_<job id>`, which must fit as well."""
    if not name:
        raise UsageError(f"{flag} is empty: a MongoDB collection needs a name")
    if "\0" in name:
        raise UsageError(f"{flag} {name!r}: MongoDB collection names may not contain NUL")
    if "$" in name:
        raise UsageError(
            f"{flag} {name!r}: MongoDB collection names may not contain '$'; choose another {flag}"
        )
    if name.startswith("system."):
        raise UsageError(
            f"{flag} {name}: names starting with 'system.' belong to MongoDB; choose another {flag}"
        )
    longest = name + TEMP_MARKER + "x" * JOB_ID_LENGTH if temp else name
    size = _size(db) + 1 + _size(longest)
    if size > NAMESPACE_MAX_BYTES:
        room = NAMESPACE_MAX_BYTES - _size(db) - 1 - (_size(longest) - _size(name))
        why = (
            f" with the temp collection's suffix {TEMP_MARKER}<job id> "
            f"({len(TEMP_MARKER) + JOB_ID_LENGTH} bytes)"
            if temp
            else ""
        )
        raise UsageError(
            f"{flag} {name[:40]!r}... is too long: the namespace {db}.<collection>{why} would be "
            f"{size} bytes, and MongoDB allows {NAMESPACE_MAX_BYTES}; in database {db} the "
            f"collection name may have at most {room} bytes: choose a shorter {flag} "
            "(or pass --collection for a long table name)"
        )


# Most file systems allow 255 bytes per path component.
FILE_NAME_MAX_BYTES = 255


def check_file_name(collection: str) -> None:
    """A `file:` target writes `DIR/<collection>.bson` (and a hidden temp directory named after
    the temp collection): the name must be one file name inside DIR, never a path out of it."""
    if not collection or collection in (".", "..") or "/" in collection or "\0" in collection:
        raise UsageError(
            f"--collection {collection!r}: a file: target writes DIR/<collection>.bson, so the "
            "name must be a plain file name (not empty, no '/', no NUL, not . or ..)"
        )
    longest = f".{collection}{TEMP_MARKER}{'x' * JOB_ID_LENGTH}.parts"
    if _size(longest) > FILE_NAME_MAX_BYTES:
        raise UsageError(
            f"--collection {collection[:40]!r}... is too long for a file: target: its temp "
            f"directory {longest[:20]}... would be {_size(longest)} bytes, and file names may "
            f"have {FILE_NAME_MAX_BYTES}; choose a shorter --collection"
        )
