"""The tool's own collections (leases, job history, temp collections, system collections) are
never accepted as a target, a stats collection or a changed-rows collection: each is refused at
preflight (exit 2), before anything is written, and what was there is left as it was."""

from __future__ import annotations

import datetime as dt
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli

FOREIGN_LEASE = {
    "_id": "other.orders",
    "job_id": "someone-else",
    "owner": "elsewhere:1",
    "token": 3,
    "expires_at": dt.datetime(2099, 1, 1),
}
OLD_JOB = {"_id": "old-job", "status": "FINISHED", "target": {"db": "x", "collection": "orders"}}

# (case, extra copy options, message substring)
CASES = [
    (
        "collection_is_the_lock_collection",
        ["--collection", "parallelsync_locks"],
        "--collection parallelsync_locks is where parallelsync keeps its target leases",
    ),
    (
        "collection_is_the_default_stats_collection",
        ["--collection", "parallelsync_jobs"],
        "--collection parallelsync_jobs is where parallelsync keeps its job documents",
    ),
    (
        "collection_is_a_custom_stats_collection",
        ["--collection", "runs", "--stats-collection", "runs"],
        "--collection runs is where parallelsync keeps its job documents",
    ),
    (
        "collection_is_the_default_stats_name_with_a_custom_stats_collection",
        ["--collection", "parallelsync_jobs", "--stats-collection", "runs"],
        "--collection parallelsync_jobs is where parallelsync keeps its job documents",
    ),
    (
        "stats_collection_is_the_lock_collection",
        ["--stats-collection", "parallelsync_locks"],
        "--stats-collection parallelsync_locks is where parallelsync keeps its target leases",
    ),
    (
        "stats_collection_is_the_target",
        ["--collection", "orders", "--stats-collection", "orders"],
        "--collection orders is where parallelsync keeps its job documents",
    ),
    (
        "changed_rows_is_the_target",
        ["--collection", "orders", "--changed-rows-collection", "orders"],
        "--changed-rows-collection orders is the target collection",
    ),
    (
        "changed_rows_is_the_stats_collection",
        ["--changed-rows-collection", "parallelsync_jobs"],
        "--changed-rows-collection parallelsync_jobs is where parallelsync keeps its job",
    ),
    (
        "changed_rows_is_the_lock_collection",
        ["--changed-rows-collection", "parallelsync_locks"],
        "--changed-rows-collection parallelsync_locks is where parallelsync keeps its target",
    ),
    (
        "collection_has_the_temp_marker",
        ["--collection", "orders__psync_tmp_1234"],
        "--collection orders__psync_tmp_1234 contains '__psync_tmp_'",
    ),
    (
        "stats_collection_has_the_temp_marker",
        ["--collection", "orders", "--stats-collection", "orders__psync_tmp_jobs"],
        "--stats-collection orders__psync_tmp_jobs contains '__psync_tmp_'",
    ),
    (
        "changed_rows_has_the_temp_marker",
        ["--changed-rows-collection", "x__psync_tmp_y"],
        "--changed-rows-collection x__psync_tmp_y contains '__psync_tmp_'",
    ),
    (
        "collection_is_a_system_collection",
        ["--collection", "system.profile"],
        "--collection system.profile: names starting with 'system.' belong to MongoDB",
    ),
    (
        "stats_collection_is_a_system_collection",
        ["--stats-collection", "system.js"],
        "--stats-collection system.js: names starting with 'system.' belong to MongoDB",
    ),
]


def seed(db: Database[Any]) -> dict[str, list[dict[str, Any]]]:
    """Another target's lease and an old job document: what the refused runs must not touch."""
    db.parallelsync_locks.insert_one(dict(FOREIGN_LEASE))
    db.parallelsync_jobs.insert_one(dict(OLD_JOB))
    return contents(db)


def contents(db: Database[Any]) -> dict[str, list[dict[str, Any]]]:
    return {name: list(db[name].find().sort("_id")) for name in db.list_collection_names()}


@pytest.mark.parametrize(("case", "extra", "msg"), CASES, ids=[c[0] for c in CASES])
def test_reserved_collection_is_refused_at_preflight(
    case: str,
    extra: list[str],
    msg: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute("CREATE TABLE orders (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO orders SELECT g, 'v' FROM generate_series(1, 20) g")
    before = seed(mongo_db)
    run = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, *extra))
    assert run.rc == 2, f"rc {run.rc}, stderr:\n{run.stderr}"
    assert msg in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    # Nothing was created or changed: no temp collection, no job document, no lease.
    assert contents(mongo_db) == before


def test_verify_refuses_the_same_names(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """`verify` runs the same preflight, so it refuses a reserved name with the same message."""
    pg_conn.execute("CREATE TABLE orders (id int4 PRIMARY KEY)")
    before = seed(mongo_db)
    run = run_cli(
        "verify", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
        "--db", mongo_db.name, "--collection", "parallelsync_locks",
    )  # fmt: skip
    assert run.rc == 2, run.stderr
    assert "--collection parallelsync_locks is where parallelsync keeps its target leases" in (
        run.stderr
    )
    assert contents(mongo_db) == before


def test_an_ordinary_name_next_to_the_reserved_ones_still_copies(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """The checks are exact: a collection merely starting with `parallelsync_` is fine, and the
    other target's lease and the old job document survive a real copy."""
    pg_conn.execute("CREATE TABLE orders (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO orders SELECT g, 'v' FROM generate_series(1, 20) g")
    seed(mongo_db)
    run = run_cli(
        *copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--collection", "parallelsync_x")
    )
    assert run.rc == 0, run.stderr
    assert mongo_db.parallelsync_x.count_documents({}) == 20
    assert list(mongo_db.parallelsync_locks.find()) == [FOREIGN_LEASE]
    assert mongo_db.parallelsync_jobs.find_one({"_id": "old-job"}) == OLD_JOB
