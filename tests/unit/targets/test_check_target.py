"""The target names a run may never write into, checked before anything connects."""

from __future__ import annotations

import pytest

from parallelsync.errors import UsageError
from parallelsync.job.state import new_job_id
from parallelsync.targets import check_target
from parallelsync.targets.base import JOB_ID_LENGTH

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


LONG = "c" * 250


@pytest.mark.parametrize(
    ("db", "names", "message"),
    [
        ("rel.names", {}, "--db 'rel.names': MongoDB database names may not contain ."),
        ("a b", {}, "may not contain space"),
        ("a/b", {}, "may not contain /"),
        ('q"x', {}, 'may not contain "'),
        ("d$", {}, "may not contain \\$"),
        ("n\0", {}, "may not contain NUL"),
        ("d" * 64, {}, "is 64 bytes: MongoDB database names must be shorter than 64 bytes"),
        ("db", {"collection": "x$y"}, "--collection 'x\\$y': MongoDB collection names may not"),
        ("db", {"collection": ""}, "--collection is empty"),
        ("db", {"collection": "a\0b"}, "may not contain NUL"),
        ("db", {"collection": LONG}, "would be 287 bytes, and MongoDB allows 255"),
        # 220 bytes fit alone, not with the temp suffix: the run would fail at its temp.
        ("db", {"collection": "c" * 220}, "at most 218 bytes"),
        ("db", {"collection": "t", "stats_collection": "s$"}, "--stats-collection 's\\$'"),
        ("db", {"collection": "t", "stats_collection": "s" * 253}, "--stats-collection .sss"),
        ("db", {"collection": "t", "changed_rows_collection": "c$"}, "--changed-rows-collection"),
        ("db", {"collection": "t", "changed_rows_collection": "system.x"}, "'system.' belong"),
    ],
)
def test_names_mongodb_refuses_are_usage_errors(
    db: str, names: dict[str, str], message: str
) -> None:
    names = {"collection": "t", **names}
    with pytest.raises(UsageError, match=message):
        check_target(URI, db, **names)


def test_job_ids_have_the_length_the_name_checks_allow_for() -> None:
    assert len(new_job_id()) == JOB_ID_LENGTH


def test_longest_names_that_fit_pass() -> None:
    # 255 = len("db") + 1 + 218 + len("__psync_tmp_") + 22: the temp collection just fits.
    check_target(URI, "db", collection="c" * 218)
    check_target(URI, "d" * 63, collection="Order Lines.v2", stats_collection="é" * 95)


@pytest.mark.parametrize("name", ["", ".", "..", "../etc/x", "a\0b", "c" * 220])
def test_file_target_names_stay_inside_the_directory(name: str) -> None:
    with pytest.raises(UsageError, match="--collection"):
        check_target("file:/tmp/out", None, collection=name)
