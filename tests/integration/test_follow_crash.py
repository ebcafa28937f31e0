"""`follow` killed (SIGKILL) between the steps of a checkpoint, then restarted, is still exact.

The steps of a transaction (docs/architecture.md, "Change capture"): MongoDB acknowledges its
writes, THEN its commit end LSN is stored as the checkpoint, THEN it is confirmed to the server.
A test hook (tests/hooks.py `hold_follow`) stops the process between two steps and says so; the
test kills it there, restarts `follow --stop-at-end`, and does so at every transaction of
test_follow.py's changes (each kind of change: TOASTed columns, key changes, a transaction
spanning two tables, deletes), then compares the collection with the table and with a fresh copy.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.cdc.stream import parse_lsn
from tests.hooks import HOLD_MARKER, HOLD_TXN_ENV
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_follow import (  # noqa: F401 (an autouse fixture)
    DDL,
    _no_leftover_slot,
    assert_exact,
    changes,
    follow,
)

WAIT_S = 120.0


def _slot(conn: psycopg.Connection[Any], name: str) -> tuple[bool, int]:
    row = conn.execute(
        "SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    ).fetchone()
    assert row is not None, f"slot {name} is gone"
    return bool(row[0]), parse_lsn(str(row[1]))


def _wait_inactive(conn: psycopg.Connection[Any], name: str) -> None:
    """The walsender of a killed client exits when it sees the socket closed: wait for that."""
    deadline = time.monotonic() + WAIT_S
    while _slot(conn, name)[0]:
        assert time.monotonic() < deadline, f"slot {name} stayed active after its client died"
        time.sleep(0.05)


def _held_run(args: list[str], point: str, hold_txn: int, marker: Path) -> str | None:
    """Run follow with the hold hook at `point`; kill it once it is held there and return the
    LSN it was holding, or None when it finished without getting there (rc 0 asserted)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    env |= {
        "PARALLELSYNC_TEST_HOOKS": f"{point}=tests.hooks:hold_follow",
        HOLD_MARKER: str(marker),
        HOLD_TXN_ENV: str(hold_txn),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + WAIT_S
        while not marker.exists():
            if proc.poll() is not None:
                _, err = proc.communicate()
                assert proc.returncode == 0, err
                return None
            assert time.monotonic() < deadline, "follow neither got to the hook nor finished"
            time.sleep(0.05)
        proc.kill()
        proc.communicate()
        return marker.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize(
    ("point", "hold_txn"),
    [
        # Held at the run's second transaction: the first is the one the last run was killed
        # in, replayed; so every transaction is applied, killed before its checkpoint, replayed.
        ("follow_applied", 2),
        # Held at the first: every transaction's checkpoint is stored and never confirmed.
        ("follow_stored", 1),
    ],
)
def test_sigkill_between_checkpoint_steps_keeps_it_exact(
    point: str,
    hold_txn: int,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    slot = "fol_kill"
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", slot))
    assert copy.rc == 0, copy.stderr
    pg_conn.execute(f"ALTER PUBLICATION {slot} ADD TABLE audit")
    changes(pg_conn)  # ten transactions of the table
    args = ["follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
            "--db", mongo_db.name, "--slot", slot, "--stop-at-end", "--json"]  # fmt: skip
    state_id = f"follow:{mongo_db.name}.orders"
    held: list[str] = []
    while len(held) <= 12:
        lsn = _held_run(args, point, hold_txn, tmp_path / f"held-{len(held)}")
        if lsn is None:
            break
        held.append(lsn)
        state = mongo_db.parallelsync_jobs.find_one({"_id": state_id})
        assert state is not None
        _wait_inactive(pg_conn, slot)
        confirmed = _slot(pg_conn, slot)[1]
        if point == "follow_applied":
            # Written, not checkpointed, not confirmed: the restart must apply it again.
            assert parse_lsn(state["applied_lsn"]) < parse_lsn(lsn)
        else:
            # Checkpointed, never confirmed: the restart must skip it although the slot
            # sends it again.
            assert state["applied_lsn"] == lsn
        assert confirmed < parse_lsn(lsn)
    # Each of the ten transactions was held once (applied: from the second on, the first run
    # holds at its second transaction).
    assert len(held) == (9 if point == "follow_applied" else 10)
    assert len(set(held)) == len(held)
    last = follow(pg_dsn, mongo_uri, mongo_db.name, slot, "--stop-at-end", "--json")
    assert last.rc == 0, last.stderr
    assert (last.json["transactions"], last.json["changes"]) == (0, 0)
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 40 + 1 - 2 - 1 + 1
    assert _slot(pg_conn, slot)[1] == parse_lsn(last.json["applied_lsn"])


def test_replayed_key_change_takes_unchanged_columns_from_the_moved_document(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    """A key change whose TOASTed column arrives unchanged takes it from the stored document.
    Replayed after a kill, the old `_id` is gone or (here) holds the row that reused the key:
    the value must come from the document the killed run moved, not from the newcomer."""
    slot = "fol_reuse"
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", slot))
    assert copy.rc == 0, copy.stderr
    with pg_conn.transaction():
        pg_conn.execute("UPDATE orders SET id = 2020 WHERE id = 20")  # doc arrives as 'u'
        pg_conn.execute("INSERT INTO orders (id, note, doc) VALUES (20, 'reused', 'other')")
        pg_conn.execute("UPDATE orders SET id = 3030 WHERE id = 30")
        pg_conn.execute("UPDATE orders SET id = 3031 WHERE id = 3030")  # moved on: 3030 is gone
    args = ["follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
            "--db", mongo_db.name, "--slot", slot, "--stop-at-end"]  # fmt: skip
    assert _held_run(args, "follow_applied", 1, tmp_path / "held") is not None
    assert mongo_db.orders.find_one({"_id": 20})["note"] == "reused"  # the writes are in
    _wait_inactive(pg_conn, slot)
    again = follow(pg_dsn, mongo_uri, mongo_db.name, slot, "--stop-at-end", "--json")
    assert again.rc == 0, again.stderr
    assert (again.json["transactions"], again.json["changes"]) == (1, 4)  # replayed
    moved = mongo_db.orders.find_one({"_id": 2020})
    assert moved is not None and moved["doc"] == "98f13708210194c475687be6106a3b84" * 200
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 41
