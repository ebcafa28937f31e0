"""`copy --slot NAME --follow` (issue 14): the changes made during the copy are applied to the
temp collection, the swap happens once it is seconds behind the table, and the target is then
followed; a later `follow --slot NAME` continues from the checkpoint. Real PostgreSQL
(wal_level=logical) and SecantusDB.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.cdc.stream import parse_lsn
from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.integration.test_copy import assert_collection_equals_table, no_temp_collections

ROWS = 3000
DDL = f"""
CREATE TABLE items (id int8 PRIMARY KEY, note text, qty int4, doc text);
ALTER TABLE items ALTER COLUMN doc SET STORAGE EXTERNAL;
INSERT INTO items SELECT i, 'note ' || i, i, CASE WHEN i % 500 = 0 THEN repeat(md5(i::text), 100)
    ELSE 'd' || i END FROM generate_series(1, {ROWS}) i;
"""
WAIT_S = 180.0
# Changes made by the before_workers hook, each in its own transaction, after the snapshot.
DURING = (
    "INSERT INTO items VALUES (5001, 'new', 1, 'x');"
    "UPDATE items SET note = 'toast kept' WHERE id = 500;"  # doc arrives unchanged ('u')
    "DELETE FROM items WHERE id IN (2, 3);"
    "UPDATE items SET id = 6004 WHERE id = 4;"  # a key change
    "UPDATE items SET qty = NULL WHERE id BETWEEN 10 AND 12"
)
DURING_TXNS, DURING_CHANGES = 5, 1 + 1 + 2 + 1 + 3


@pytest.fixture(autouse=True)
def _no_leftover_slot(pg_conn: psycopg.Connection[Any]) -> Any:
    yield
    pg_conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name LIKE 'cf_%' AND database = current_database() AND NOT active"
    )


def _args(pg_dsn: str, mongo_uri: str, db: str, slot: str, *extra: str) -> list[str]:
    return copy_args(pg_dsn, "items", mongo_uri, db, "--slot", slot, "--follow", *extra)


def _hook_env(*hooks: str, sql: str | None = None) -> dict[str, str]:
    env = {"PARALLELSYNC_TEST_HOOKS": ",".join(hooks)}
    if sql is not None:
        env["PSYNC_TEST_SQL"] = sql
    return env


def _slot(conn: psycopg.Connection[Any], name: str) -> str | None:
    row = conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (name,)
    ).fetchone()
    return None if row is None else str(row[0])


def _follow(pg_dsn: str, mongo_uri: str, db: str, slot: str, *extra: str) -> Run:
    return run_cli("follow", "--source", pg_dsn, "--table", "items", "--target", mongo_uri,
                   "--db", db, "--slot", slot, *extra)  # fmt: skip


def test_copy_follow_applies_the_changes_made_during_the_copy_then_stops_at_the_end(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    run = run_cli(
        *_args(pg_dsn, mongo_uri, mongo_db.name, "cf_a", "--stop-at-end", "--json"),
        env=_hook_env("before_workers=tests.hooks:run_sql_each", sql=DURING),
    )
    assert run.rc == 0, run.stderr
    out = run.json
    assert out["status"] == "FINISHED" and out["error"] is None
    # The copy read the snapshot (3000 rows); the changes after it came from the slot.
    assert out["rows"] == ROWS
    swap = out["swap"]
    assert (swap["transactions_before_swap"], swap["changes_before_swap"]) == (
        DURING_TXNS, DURING_CHANGES,
    )  # fmt: skip
    assert swap["lag_seconds_at_swap"] is not None and swap["lag_seconds_at_swap"] <= 5
    assert parse_lsn(swap["swap_lsn"]) > parse_lsn(out["consistent_lsn"])
    assert out["follow"]["status"] == "FINISHED"
    assert out["follow"]["reason"] == "reached the end position"
    names = [p["name"] for p in out["phases"]]
    assert names[-3:] == ["catch-up", "swap", "follow"] and names.index("indexes") < names.index(
        "catch-up"
    )
    assert assert_collection_equals_table(pg_conn, mongo_db, "items", "items") == ROWS + 1 - 2
    assert mongo_db.items.find_one({"_id": 500})["doc"] == "cee631121c2ec9232f3a2f028ad5c89b" * 100
    assert no_temp_collections(mongo_db)
    # The job document: FINISHED, swapped, with the figures of the swap; the follow checkpoint
    # belongs to this copy, and the slot is confirmed up to it.
    job = mongo_db.parallelsync_jobs.find_one({"_id": out["job_id"]})
    assert job is not None and job["status"] == "FINISHED" and job["swap_outcome"] == "done"
    assert job["follow"]["swap_lsn"] == swap["swap_lsn"]
    assert job["follow"]["changes_before_swap"] == DURING_CHANGES
    assert job["follow"]["state"] == "FINISHED"
    state = mongo_db.parallelsync_jobs.find_one({"_id": f"follow:{mongo_db.name}.items"})
    assert state is not None and state["copy_job"] == out["job_id"]
    assert state["state"] == "FINISHED" and state["applied_lsn"] == out["follow"]["applied_lsn"]
    assert _slot(pg_conn, "cf_a") == out["follow"]["applied_lsn"]
    # A later plain follow continues from that checkpoint: nothing twice, only what is new.
    pg_conn.execute("UPDATE items SET note = 'later' WHERE id = 1")
    pg_conn.execute("DELETE FROM items WHERE id = 7")
    later = _follow(pg_dsn, mongo_uri, mongo_db.name, "cf_a", "--stop-at-end", "--json")
    assert later.rc == 0, later.stderr
    assert later.json["start_lsn"] == out["follow"]["applied_lsn"]
    assert (later.json["transactions"], later.json["changes"]) == (2, 2)
    assert assert_collection_equals_table(pg_conn, mongo_db, "items", "items") == ROWS + 1 - 3


# The writers' pace: one round of 4 transactions, then this pause. A load, not a wait for a
# state: writers faster than SecantusDB applies (one bulk write per transaction) would never let
# the catch-up get close, the case test_a_catch_up_that_never_gets_close... covers.
PAUSE_S = 0.05


class Writers:
    """A thread that inserts, updates, deletes and changes primary keys in a loop, one
    transaction per statement, until stopped."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.stop = threading.Event()
        self.transactions = 0
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    conn.execute("INSERT INTO items VALUES (%s, 'w', %s, 'w')", (100_000 + i, i))
                    conn.execute("UPDATE items SET qty = qty + 1, note = 'u' || %s WHERE id = %s",
                                 (i, i * 7 % ROWS + 1))  # fmt: skip
                    conn.execute("DELETE FROM items WHERE id = %s", (100_000 + i - 3,))
                    conn.execute("UPDATE items SET id = %s WHERE id = %s",
                                 (200_000 + i, i * 13 % ROWS + 1))  # fmt: skip
                    self.transactions += 4
                    self.stop.wait(PAUSE_S)
        except BaseException as exc:  # the test asserts there was none
            self.error = exc

    def __enter__(self) -> Writers:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def _wait(what: str, check: Any, proc: subprocess.Popen[str]) -> Any:
    deadline = time.monotonic() + WAIT_S
    while True:
        got = check()
        if got:
            return got
        if proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"copy --follow exited ({proc.returncode}) before {what}: {err}")
        if time.monotonic() > deadline:
            proc.kill()
            _, err = proc.communicate()
            raise AssertionError(f"timed out waiting for {what}; copy --follow said: {err}")
        time.sleep(0.05)


def _popen(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    return subprocess.Popen(
        [sys.executable, "-m", "parallelsync", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, env=full | (env or {}), stdin=subprocess.DEVNULL,
    )  # fmt: skip


def test_concurrent_writers_swap_seconds_behind_then_follow_until_sigterm(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    import signal

    pg_conn.execute(DDL)
    jobs = mongo_db.parallelsync_jobs
    with Writers(pg_dsn) as writers:
        proc = _popen(_args(pg_dsn, mongo_uri, mongo_db.name, "cf_w", "--json"))
        try:
            # The writers go on through the copy, the catch-up and the swap.
            job = _wait("the swap", lambda: jobs.find_one(
                {"status": "FINISHED", "follow.swap_lsn": {"$exists": True}}), proc)  # fmt: skip
            writers.stop.set()
            writers.thread.join(timeout=60)
            assert writers.error is None and writers.transactions > 0
            # The insert position: the test servers commit without waiting for the WAL flush
            # (synchronous_commit off), so the flush position may not cover the last commits.
            final = pg_conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
            assert final is not None
            state_id = f"follow:{mongo_db.name}.items"

            def applied_to_end() -> bool:
                st = jobs.find_one({"_id": state_id}) or {}
                return parse_lsn(st.get("applied_lsn") or "0/0") >= parse_lsn(str(final[0]))

            _wait("the follow to apply every change", applied_to_end, proc)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=WAIT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == 0, err
    result = Run(proc.returncode, out, err).json
    # (1) The swap happened seconds behind the table, after applying the copy's changes.
    fig = job["follow"]
    assert fig["changes_before_swap"] > 0
    assert fig["lag_seconds_at_swap"] is not None and fig["lag_seconds_at_swap"] <= 5
    assert result["swap"]["swap_lsn"] == fig["swap_lsn"]
    assert result["follow"]["status"] == "STOPPED"
    assert result["follow"]["reason"] == "stopped by a signal"
    # (2) Every change is in the target, document by document.
    assert_collection_equals_table(pg_conn, mongo_db, "items", "items")
    assert no_temp_collections(mongo_db)
    job = jobs.find_one({"_id": result["job_id"]})
    assert job is not None and job["status"] == "FINISHED" and job["follow"]["state"] == "STOPPED"
    # (3) A later plain follow continues from the checkpoint: only the new change.
    pg_conn.execute("UPDATE items SET note = 'after' WHERE id = 100")
    later = _follow(pg_dsn, mongo_uri, mongo_db.name, "cf_w", "--stop-at-end", "--json")
    assert later.rc == 0, later.stderr
    assert later.json["start_lsn"] == result["follow"]["applied_lsn"]
    assert (later.json["transactions"], later.json["changes"]) == (1, 1)
    assert_collection_equals_table(pg_conn, mongo_db, "items", "items")


def test_an_error_after_the_swap_ends_the_follow_only(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    jobs = mongo_db.parallelsync_jobs
    proc = _popen(_args(pg_dsn, mongo_uri, mongo_db.name, "cf_e", "--idle-exit", "120",
                        "--json"))  # fmt: skip
    try:
        _wait("the swap", lambda: jobs.find_one({"status": "FINISHED"}), proc)
        pg_conn.execute("ALTER TABLE items ADD COLUMN extra int")
        pg_conn.execute("UPDATE items SET note = 'new shape', extra = 1 WHERE id = 1")
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # The follow's error is the exit code; the copy itself stays FINISHED and keeps everything.
    assert proc.returncode == 3, err
    assert "table public.items changed (only in the change stream: extra;" in err
    result = Run(proc.returncode, out, err).json
    assert result["status"] == "FINISHED" and result["follow"]["status"] == "FAILED"
    assert result["error"].startswith("table public.items changed")
    job = jobs.find_one({"_id": result["job_id"]})
    assert job is not None and job["status"] == "FINISHED" and job["swap_outcome"] == "done"
    assert job["follow"]["state"] == "FAILED" and "changed" in job["follow"]["error"]
    assert mongo_db.items.count_documents({}) == ROWS
    assert mongo_db.items.find_one({"_id": 1})["note"] == "note 1"  # nothing of the new shape
    assert _slot(pg_conn, "cf_e") is not None  # kept: change capture resumes from it
    state = jobs.find_one({"_id": f"follow:{mongo_db.name}.items"})
    assert state is not None and state["state"] == "FAILED" and state["copy_job"] == job["_id"]


def test_sigterm_during_the_catch_up_aborts_and_keeps_the_target(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    mongo_db.items.insert_one({"_id": "old", "v": 1})  # the target before: must stay as it is
    run = run_cli(
        *_args(pg_dsn, mongo_uri, mongo_db.name, "cf_t", "--json"),
        env=_hook_env("before_workers=tests.hooks:run_sql_each",
                      "catch_up_applied=tests.hooks:terminate_self", sql=DURING),
    )  # fmt: skip
    assert run.rc == 130, run.stderr
    assert run.json["status"] == "ABORTED"
    assert "during the catch-up, before the swap: the target is unchanged" in run.json["error"]
    assert list(mongo_db.items.find()) == [{"_id": "old", "v": 1}]
    assert no_temp_collections(mongo_db)
    # As any aborted copy: its slot and publication are dropped, the job says ABORTED.
    assert _slot(pg_conn, "cf_t") is None
    assert pg_conn.execute("SELECT 1 FROM pg_publication WHERE pubname = 'cf_t'").fetchone() is None
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["status"] == "ABORTED"
    assert mongo_db.parallelsync_jobs.find_one({"_id": f"follow:{mongo_db.name}.items"}) is None


def test_a_catch_up_that_never_gets_close_fails_with_the_target_unchanged(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    run = run_cli(
        *_args(pg_dsn, mongo_uri, mongo_db.name, "cf_s", "--swap-lag-seconds", "0",
               "--catch-up-timeout-seconds", "0.001"),
        env=_hook_env("before_workers=tests.hooks:run_sql_each", sql=DURING),
    )  # fmt: skip
    assert run.rc == 1, run.stderr
    assert "the catch-up did not get within --swap-lag-seconds 0 of the table in 0.001 s" in (
        run.stderr
    )
    assert "items" not in mongo_db.list_collection_names() and no_temp_collections(mongo_db)
    assert _slot(pg_conn, "cf_s") is None


def test_copy_follow_usage_errors(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    db = mongo_db.name
    cases = [
        (copy_args(pg_dsn, "items", mongo_uri, db, "--follow"), "pass --slot NAME too"),
        (copy_args(pg_dsn, "items", "null:", db, "--slot", "cf_u", "--follow"),
         "a null: target cannot take them"),
        (copy_args(pg_dsn, "items", "file:/tmp/cf_u", db, "--slot", "cf_u", "--follow"),
         "a file: target cannot take them"),
        (_args(pg_dsn, mongo_uri, db, "cf_u", "--resume", "last"),
         "--follow does not combine with --resume"),
        (_args(pg_dsn, mongo_uri, db, "cf_u", "--changed-rows-collection", "chg"),
         "leave out one of them"),
        (_args(pg_dsn, mongo_uri, db, "cf_u", "--stop-at-end", "--idle-exit", "3"),
         "exclude each other"),
        (copy_args(pg_dsn, "items", mongo_uri, db, "--slot", "cf_u", "--stop-at-end"),
         "pass --follow too"),
        (_args(pg_dsn, mongo_uri, db, "cf_u", "--swap-lag-seconds", "-1"), "0 or more"),
    ]  # fmt: skip
    for args, message in cases:
        run = run_cli(*args)
        assert run.rc == 2, (args, run.stderr)
        assert message in run.stderr, (args, run.stderr)
    # Nothing was made anywhere.
    assert _slot(pg_conn, "cf_u") is None
    assert "items" not in mongo_db.list_collection_names()
