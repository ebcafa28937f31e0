"""The target names a run may never write into, checked before anything connects."""

from __future__ import annotations

import pytest

from parallelsync.errors import UsageError
from parallelsync.targets import check_target

URI = "mongodb://h/"


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ({"collection": "parallelsync_locks"}, "--collection parallelsync_locks is where"),
        ({"collection": "parallelsync_jobs"}, "keeps its job documents"),
        ({"collection": "runs", "stats_collection": "runs"}, "--collection runs is where"),
        ({"collection": "t", "stats_collection": "parallelsync_locks"}, "target leases"),
        ({"collection": "t", "changed_rows_collection": "t"}, "is the target collection"),
        ({"collection": "t", "changed_rows_collection": "parallelsync_jobs"}, "job documents"),
        ({"collection": "t__psync_tmp_x"}, "contains '__psync_tmp_'"),
        ({"collection": "system.views"}, "names starting with 'system.' belong to MongoDB"),
    ],
)
def test_reserved_names_are_refused(names: dict[str, str], message: str) -> None:
    with pytest.raises(UsageError, match=message.replace(".", r"\.")):
        check_target(URI, "db", **names)


def test_ordinary_names_and_other_target_kinds_pass() -> None:
    check_target(URI, "db", collection="parallelsync_x", changed_rows_collection="changes")
    # file: and null: targets keep no leases or job documents next to the data
    check_target("file:/tmp", None, collection="parallelsync_locks")
    check_target("null:", None, collection="system.x")
    with pytest.raises(UsageError, match="--db is required"):
        check_target(URI, "", collection="t")
