"""`copy --resume` after the coordinator was killed: finished ranges are kept, the rest is copied
under a new snapshot and (with a slot) the changes in between are applied, so the target equals
the source as of the resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_copy import assert_collection_equals_table, no_temp_collections

ROWS = 12_000
MIN_ROWS = 1500  # rows copied when a killed job is held: some ranges done, others not


def start_copy(
    pg_dsn: str,
    mongo_uri: str,
    db: str,
    *extra: str,
    hold: Path | None = None,
    pause: Path | None = None,
) -> subprocess.Popen[str]:
    """The copy as a user starts it; with `hold`, its coordinator stops (and creates that file)
    once the job document shows MIN_ROWS rows and a finished range (tests/hooks.py); with
    `pause`, it waits at its first finished range until the test creates `pause/release`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    if hold is not None:
        env |= {
            "PARALLELSYNC_TEST_HOOKS": "range_done=tests.hooks:hold_the_job",
            "PSYNC_TEST_HOLD_MARKER": str(hold),
            "PSYNC_TEST_HOLD_ROWS": str(MIN_ROWS),
        }
    if pause is not None:
        env |= {
            "PARALLELSYNC_TEST_HOOKS": "range_done=tests.hooks:hold_until_released",
            "PARALLELSYNC_TEST_HOLD_DIR": str(pause),
        }
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "parallelsync",
            *copy_args(
                pg_dsn, "acc", mongo_uri, db, "--workers", "2", "--batch-rows", "50", *extra
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        start_new_session=True,  # its own process group: SIGKILL reaches the workers too
    )


def kill_when_held(
    proc: subprocess.Popen[str], mongo_db: Database[Any], hold: Path
) -> dict[str, Any]:
    """SIGKILL the whole job once its coordinator holds at the hook (see `start_copy`)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not hold.exists():
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    if not hold.exists():
        pytest.fail("the copy never reached the point where it is held")
    job = mongo_db.parallelsync_jobs.find_one({}, sort=[("started_at", -1)])
    assert job is not None and job["totals"]["rows"] >= MIN_ROWS
    assert any(r["status"] == "DONE" for r in job["ranges"])
    assert any(r["status"] != "DONE" for r in job["ranges"])
    return job


def make_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE acc (id int4 PRIMARY KEY, bal int4 NOT NULL, note text)")
    conn.execute(f"INSERT INTO acc SELECT g, 100, 'n' || g FROM generate_series(1, {ROWS}) g")
    conn.execute("ANALYZE acc")


def change_everywhere(conn: psycopg.Connection[Any]) -> None:
    """Changes in every part of the key space: finished ranges and unfinished ones alike."""
    conn.execute("UPDATE acc SET bal = bal + 1 WHERE id % 97 = 0")
    conn.execute("DELETE FROM acc WHERE id % 101 = 0")
    conn.execute(
        f"INSERT INTO acc SELECT g, 7, 'late' FROM generate_series({ROWS + 1}, {ROWS + 40}) g"
    )
    conn.execute("UPDATE acc SET id = id + 1000000 WHERE id IN (5, 6005)")  # key changes too


def test_resume_with_slot_gives_the_table_as_of_the_resume(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    make_table(pg_conn)
    hold = tmp_path / "held"
    proc = start_copy(pg_dsn, mongo_uri, mongo_db.name, "--slot", "resume_slot", hold=hold)
    killed = kill_when_held(proc, mongo_db, hold)
    assert killed["status"] == "RUNNING"
    assert [n for n in mongo_db.list_collection_names() if "__psync_tmp_" in n]
    change_everywhere(pg_conn)

    run = run_cli(
        *copy_args(
            pg_dsn,
            "acc",
            mongo_uri,
            mongo_db.name,
            "--workers",
            "2",
            "--slot",
            "resume_slot",
            "--resume",
            "last",
            "--json",
        )
    )
    assert run.rc == 0, run.stderr
    out = run.json
    assert out["status"] == "FINISHED" and out["job_id"] == killed["_id"]
    assert out["consistency"] == "snapshot"
    assert f"resuming job {killed['_id']}" in run.stderr
    expected = ROWS - ROWS // 101 + 40
    assert assert_collection_equals_table(pg_conn, mongo_db, "acc", "acc") == expected
    assert (
        mongo_db.acc.find_one({"_id": 1000005}) is not None
        and mongo_db.acc.find_one({"_id": 5}) is None
    )
    job = mongo_db.parallelsync_jobs.find_one({"_id": killed["_id"]})
    assert job is not None
    assert job["status"] == "FINISHED" and job["resumes"] == 1 and job["consistency"] == "snapshot"
    assert job["resume_changed_rows"] > 0
    slot = pg_conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'resume_slot'"
    ).fetchone()
    assert (
        slot is not None and slot[0] == out["consistent_lsn"] == job["snapshot"]["consistent_lsn"]
    )
    assert no_temp_collections(mongo_db)


def test_resume_without_slot_finishes_with_per_range_consistency(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    make_table(pg_conn)
    hold = tmp_path / "held"
    proc = start_copy(pg_dsn, mongo_uri, mongo_db.name, hold=hold)
    killed = kill_when_held(proc, mongo_db, hold)
    strict = run_cli(
        *copy_args(pg_dsn, "acc", mongo_uri, mongo_db.name, "--resume", killed["_id"],
                   "--require-snapshot-consistency")
    )  # fmt: skip
    assert strict.rc == 2, strict.stderr
    assert "a resume can only give per-range consistency" in strict.stderr
    run = run_cli(
        *copy_args(
            pg_dsn,
            "acc",
            mongo_uri,
            mongo_db.name,
            "--workers",
            "2",
            "--resume",
            killed["_id"],
            "--json",
        )
    )
    assert run.rc == 0, run.stderr
    assert run.json["rows"] == ROWS
    assert run.json["consistency"] == "per-range"
    assert "consistency       per-range: a resume without a slot" in run.stderr
    # nothing changed in between, so even per-range consistency gives exactly the table
    assert assert_collection_equals_table(pg_conn, mongo_db, "acc", "acc") == ROWS
    job = mongo_db.parallelsync_jobs.find_one({"_id": killed["_id"]})
    assert job is not None and job["consistency"] == "per-range" and job["status"] == "FINISHED"
    assert no_temp_collections(mongo_db)
    again = run_cli(*copy_args(pg_dsn, "acc", mongo_uri, mongo_db.name, "--resume", killed["_id"]))
    assert again.rc == 2
    assert "already finished" in again.stderr


def test_resume_refuses_while_the_job_is_alive(
    tmp_path: Path,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    make_table(pg_conn)
    # Paused at its first finished range: alive for sure (it cannot finish under the resume).
    proc = start_copy(pg_dsn, mongo_uri, mongo_db.name, pause=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "reached").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "never reached the pause"
            time.sleep(0.1)
        job = mongo_db.parallelsync_jobs.find_one({"status": "RUNNING"})
        assert job is not None
        run = run_cli(*copy_args(pg_dsn, "acc", mongo_uri, mongo_db.name, "--resume", "last"))
        assert run.rc == 5, run.stderr
        assert f"job {job['_id']} still holds the target lease" in run.stderr
    finally:
        (tmp_path / "release").write_text("go")
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert mongo_db.acc.count_documents({}) == ROWS
