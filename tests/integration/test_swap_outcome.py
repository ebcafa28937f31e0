"""A rename whose answer is lost (the connection drops, or the server does not answer within
--target-timeout-seconds) is settled by looking after reconnecting, never assumed: the message,
the exit code and the job document's swap_outcome say what is known (issue 11 item 10)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.hooks import RENAME_FAULT_APP, RENAME_FAULT_ENV
from tests.integration.cli_helpers import copy_args, run_cli

ROWS = 300
OLD = [{"_id": -i, "v": "old"} for i in range(1, 6)]


@pytest.fixture
def fail_points(mongo_client: MongoClient[Any]) -> Iterator[None]:
    try:
        mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    except OperationFailure as exc:
        pytest.skip(f"the MongoDB server has no failCommand fail point: {exc}")
    yield
    mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def copy_with_fault(
    mode: str, pg_dsn: str, mongo_uri: str, db: Database[Any], *extra: str
) -> tuple[int, str, dict[str, Any]]:
    uri = f"{mongo_uri}{'&' if '?' in mongo_uri else '?'}appName={RENAME_FAULT_APP}"
    env = {
        "PARALLELSYNC_TEST_HOOKS": "before_swap=tests.hooks:rename_fault",
        RENAME_FAULT_ENV: mode,
    }
    args = copy_args(pg_dsn, "items", uri, db.name, "--workers", "2", "--json", *extra)
    run = run_cli(*args, env=env, timeout=120)
    jobs = list(db.parallelsync_jobs.find())
    assert len(jobs) == 1, jobs
    return run.rc, run.stderr, jobs[0]


@pytest.fixture
def items(pg_conn: psycopg.Connection[Any], mongo_db: Database[Any]) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, v text)")
    pg_conn.execute(f"INSERT INTO items SELECT g, 'new' FROM generate_series(1, {ROWS}) g")
    mongo_db.items.insert_many([dict(d) for d in OLD])


def target_is_old(db: Database[Any]) -> bool:
    return list(db.items.find().sort("_id")) == sorted(OLD, key=lambda d: d["_id"])


def temps(db: Database[Any]) -> list[str]:
    return [n for n in db.list_collection_names() if "__psync_tmp_" in n]


@pytest.mark.usefixtures("fail_points", "items")
def test_connection_lost_before_the_server_renamed_says_the_target_is_unchanged(
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    rc, stderr, job = copy_with_fault("close", pg_dsn, mongo_uri, mongo_db)
    assert rc == 4, stderr
    assert "the connection to MongoDB was lost" in stderr
    assert "after reconnecting" in stderr and "the target is unchanged" in stderr
    assert job["status"] == "FAILED" and job["swap_outcome"] == "not_done"
    assert target_is_old(mongo_db) and temps(mongo_db) == []


@pytest.mark.usefixtures("fail_points", "items")
def test_connection_lost_after_the_server_renamed_reports_the_swap_as_done(
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    rc, stderr, job = copy_with_fault("done", pg_dsn, mongo_uri, mongo_db)
    assert rc == 0, stderr
    assert "the target is unchanged" not in stderr
    assert "after reconnecting" in stderr and "the swap took place" in stderr
    assert job["status"] == "FINISHED" and job["swap_outcome"] == "done"
    assert "the swap took place" in job["swap_note"]
    assert mongo_db.items.count_documents({}) == ROWS and temps(mongo_db) == []


@pytest.mark.usefixtures("fail_points", "items")
def test_outcome_that_cannot_be_checked_is_unknown_and_fails(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # A short call bound: every look at the collections fails, and is retried until the bound.
    try:
        rc, stderr, job = copy_with_fault(
            "unknown", pg_dsn, mongo_uri, mongo_db, "--target-timeout-seconds", "5",
            "--slot", "unknown_swap",
        )  # fmt: skip
        # The target may be the new copy: the slot change capture would resume from is kept.
        kept = pg_conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'unknown_swap'"
        ).fetchone()
    finally:
        pg_conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = 'unknown_swap'"
        )
    assert kept == (1,), stderr
    assert "kept replication slot unknown_swap" in stderr
    assert "(slot unknown_swap kept: valid only if the swap took place)" in stderr
    assert rc == 4, stderr
    assert "the outcome is unknown" in stderr
    assert "the target is unchanged" not in stderr
    assert "UNKNOWN: the target may be the old or the new collection" in stderr  # the summary
    assert job["status"] == "FAILED" and job["swap_outcome"] == "unknown"
    assert "the outcome is unknown" in job["error"]
    # The server had in fact replaced the target: the message did not claim otherwise.
    assert mongo_db.items.count_documents({}) == ROWS


@pytest.mark.usefixtures("fail_points", "items")
def test_hung_rename_ends_at_the_call_bound_with_a_message_naming_it(
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    rc, stderr, job = copy_with_fault(
        "hang", pg_dsn, mongo_uri, mongo_db, "--target-timeout-seconds", "2"
    )
    assert rc == 4, stderr
    assert "renaming items__psync_tmp_" in stderr
    assert "MongoDB did not answer within 2 s (--target-timeout-seconds)" in stderr
    # The temp was dropped before the held rename could run: it can never replace the target.
    assert "the target is unchanged" in stderr
    assert job["status"] == "FAILED" and job["swap_outcome"] == "not_done"
    assert job["elapsed"] < 60
    assert target_is_old(mongo_db) and temps(mongo_db) == []


@pytest.mark.usefixtures("fail_points", "items")
def test_a_socket_timeout_in_the_uri_is_the_bound_the_message_names(
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """pymongo keeps the URI's socketTimeoutMS over the option's value (client.connect): the
    message says what really ended the call, not the flag the user left at its default."""
    uri = f"{mongo_uri}{'&' if '?' in mongo_uri else '?'}socketTimeoutMS=2000"
    rc, stderr, job = copy_with_fault("hang", pg_dsn, uri, mongo_db)
    assert rc == 4, stderr
    assert "MongoDB did not answer within 2 s (socketTimeoutMS in the target URI)" in stderr
    assert "--target-timeout-seconds" not in stderr
    assert job["status"] == "FAILED" and job["swap_outcome"] == "not_done"
    assert target_is_old(mongo_db) and temps(mongo_db) == []


def test_a_finished_copy_records_the_swap_as_done(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY)")
    pg_conn.execute("INSERT INTO items SELECT generate_series(1, 10)")
    run = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--json"))
    assert run.rc == 0, run.stderr
    assert run.json["swap_outcome"] == "done"
    job = mongo_db.parallelsync_jobs.find_one()
    assert job is not None and job["swap_outcome"] == "done" and "swap_note" not in job
