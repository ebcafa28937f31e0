"""`follow` and passing trouble: transient MongoDB errors while applying are retried a bounded
number of times (the writes are idempotent), then reported; a slot still held by the walsender
of a follow killed a moment ago is waited for, briefly, instead of failing the restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from parallelsync.cdc.stream import ReplicationStream
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_follow import (  # noqa: F401 (an autouse fixture)
    DDL,
    _no_leftover_slot,
    assert_exact,
    changes,
    follow,
)
from tests.integration.test_follow_crash import _held_run, _slot

APP = "psync_follow_fault"
WAIT_S = 120.0


@pytest.fixture
def fail_points(mongo_client: MongoClient[Any]) -> Iterator[MongoClient[Any]]:
    try:
        mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    except OperationFailure as exc:
        pytest.skip(f"the MongoDB server has no failCommand fail point: {exc}")
    yield mongo_client
    mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def fail_deletes(client: MongoClient[Any], mode: Any, **data: Any) -> None:
    """The follow's `delete` commands (its apply's alone: the checkpoint and lease never
    delete while it runs) fail as given."""
    client.admin.command({
        "configureFailPoint": "failCommand", "mode": mode,
        "data": {"failCommands": ["delete"], "appName": APP, **data},
    })  # fmt: skip


def copied(pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, db: Database[Any],
           slot: str) -> None:  # fmt: skip
    pg_conn.execute(DDL)
    run = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, db.name, "--slot", slot))
    assert run.rc == 0, run.stderr


def fault_uri(mongo_uri: str) -> str:
    return f"{mongo_uri}{'&' if '?' in mongo_uri else '?'}appName={APP}"


@pytest.mark.parametrize(
    "fault",
    [
        {"closeConnection": True},  # AutoReconnect: the connection dropped
        {"errorCode": 10107},  # NotWritablePrimary: a primary stepped down
    ],
)
def test_transient_errors_while_applying_are_retried(
    fault: dict[str, Any], fail_points: MongoClient[Any], pg_conn: psycopg.Connection[Any],
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
) -> None:  # fmt: skip
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fr_a")
    changes(pg_conn)
    fail_deletes(fail_points, {"times": 3}, **fault)
    run = follow(pg_dsn, fault_uri(mongo_uri), mongo_db.name, "fol_fr_a", "--stop-at-end", "--json")
    assert run.rc == 0, run.stderr
    assert run.json["write_retries"] >= 1
    assert run.json["transactions"] == 10
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 40 + 1 - 2 - 1 + 1


def test_lasting_errors_fail_after_bounded_retries_and_lose_nothing(
    fail_points: MongoClient[Any], pg_conn: psycopg.Connection[Any], pg_dsn: str,
    mongo_uri: str, mongo_db: Database[Any],
) -> None:  # fmt: skip
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fr_b")
    changes(pg_conn)
    fail_deletes(fail_points, "alwaysOn", closeConnection=True)
    started = time.monotonic()
    run = follow(pg_dsn, fault_uri(mongo_uri), mongo_db.name, "fol_fr_b", "--stop-at-end")
    assert run.rc == 4, run.stderr
    assert time.monotonic() - started < 60  # bounded: five attempts, about 6 s of backoff
    assert "MongoDB became unreachable while applying changes" in run.stderr
    assert "(after 5 attempts)" in run.stderr
    state = mongo_db.parallelsync_jobs.find_one({"_id": f"follow:{mongo_db.name}.orders"})
    assert state is not None and state["state"] == "FAILED"
    fail_points.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    again = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fr_b", "--stop-at-end")
    assert again.rc == 0, again.stderr
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 40 + 1 - 2 - 1 + 1


def test_slot_held_a_moment_longer_is_waited_for(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fr_c")
    pg_conn.execute("UPDATE orders SET note = 'after the hold' WHERE id = 1")
    holder = ReplicationStream(pg_dsn, "fol_fr_c", "fol_fr_c", application_name="a consumer ending")
    holder.open(0)
    assert _slot(pg_conn, "fol_fr_c")[0]  # active: held by the stream above
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", "follow", "--source", pg_dsn, "--table", "orders",
         "--target", mongo_uri, "--db", mongo_db.name, "--slot", "fol_fr_c", "--stop-at-end"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = []
        for line in proc.stderr:  # the state to wait for: follow says it waits
            seen.append(line)
            if "replication slot fol_fr_c is in use" in line:
                break
        assert "waiting up to 5 s for it to be released" in seen[-1], seen
        holder.close()
        _, rest = proc.communicate(timeout=WAIT_S)
        assert proc.returncode == 0, "".join(seen) + rest
    finally:
        holder.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert mongo_db.orders.find_one({"_id": 1})["note"] == "after the hold"


def test_follow_killed_and_restarted_at_once_stays_exact(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fr_d")
    pg_conn.execute("ALTER PUBLICATION fol_fr_d ADD TABLE audit")
    changes(pg_conn)
    args = ["follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
            "--db", mongo_db.name, "--slot", "fol_fr_d", "--stop-at-end"]  # fmt: skip
    # Killed while streaming, restarted without waiting for its walsender; twice: a run groups
    # the transactions that arrive together, so a third run may have no second checkpoint.
    for n in range(2):
        assert _held_run(args, "follow_applied", 2, tmp_path / f"held-{n}") is not None
    again = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fr_d", "--stop-at-end", "--json")
    assert again.rc == 0, again.stderr
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 40 + 1 - 2 - 1 + 1
