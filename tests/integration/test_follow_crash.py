"""`follow` killed (SIGKILL) between the steps of a checkpoint, then restarted, is still exact.

The steps of a checkpoint (docs/architecture.md, "Change capture"): MongoDB acknowledges the
writes of a transaction or of a group of them (group commit), THEN the last commit's end LSN is
stored as the checkpoint, THEN it is confirmed to the server. A test hook (tests/hooks.py
`hold_follow`) stops the process between two steps and says so; the test kills it there,
restarts `follow --stop-at-end`, and does so at every checkpoint of test_follow.py's changes
(each kind of change: TOASTed columns, key changes, a transaction spanning two tables, deletes),
then compares the collection with the table and with a fresh copy.
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
        # Held at the run's second checkpoint: the first stores what the last run was killed
        # in, replayed; so every group is applied, killed before its checkpoint, replayed.
        ("follow_applied", 2),
        # Held at the first: every checkpoint is stored and never confirmed.
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
    stored: list[int] = []  # the checkpoint each killed run left
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
        stored.append(parse_lsn(state["applied_lsn"]))
    # Every killed run got further than the one before (its first checkpoint is stored), and
    # at most ten checkpoints (one per transaction) hold the ten transactions.
    assert held and stored == sorted(set(stored))
    assert len(held) <= 10
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


# Single-row transactions that follow groups into one write and one checkpoint, with two key
# changes whose TOASTed `doc` arrives unchanged (read from the stored document): 20 -> 22 takes
# the key that T2 freed, then a new row takes 20; 23 -> 2323 later. A replay of the whole group
# onto a collection holding all of it would read the moved document at the wrong place (T2's
# replay deletes 22 again, and 20 is the newcomer): follow checkpoints before such a lookup, so
# nothing written after a checkpoint is ahead of a lookup but its own transaction's changes.
GROUP = (
    "UPDATE orders SET note = 'g1' WHERE id = 21",  # doc 'u': a $set
    "DELETE FROM orders WHERE id = 22",
    "UPDATE orders SET id = 22 WHERE id = 20",  # a key change, doc 'u': looked up
    "INSERT INTO orders (id, note, doc) VALUES (20, 'reused', 'other')",
    "UPDATE orders SET note = 'g5' WHERE id = 22",
    "UPDATE orders SET id = 2323 WHERE id = 23",  # looked up
    "UPDATE orders SET note = 'g7' WHERE id = 2323",
    "INSERT INTO orders (id, note) VALUES (200, 'g8'), (201, 'g8')",
    "DELETE FROM orders WHERE id = 201",
)


def test_group_of_single_row_transactions_killed_before_its_checkpoint_is_exact(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    slot = "fol_group"
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", slot))
    assert copy.rc == 0, copy.stderr
    for statement in GROUP:  # one transaction each (autocommit)
        pg_conn.execute(statement)
    args = ["follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
            "--db", mongo_db.name, "--slot", slot, "--stop-at-end"]  # fmt: skip
    state_id = f"follow:{mongo_db.name}.orders"
    stored: list[int] = []
    for n in range(len(GROUP) + 1):
        # Killed with the group written and its checkpoint not stored; then the restart is
        # killed with its first checkpoint stored and not confirmed (the next run goes on
        # from it), so each group boundary of the changes is killed at.
        written = _held_run(args, "follow_applied", 1, tmp_path / f"applied-{n}")
        _wait_inactive(pg_conn, slot)
        if written is None:
            break
        lsn = _held_run(args, "follow_stored", 1, tmp_path / f"stored-{n}")
        _wait_inactive(pg_conn, slot)
        if lsn is None:
            break
        state = mongo_db.parallelsync_jobs.find_one({"_id": state_id})
        assert state is not None and state["applied_lsn"] == lsn
        stored.append(parse_lsn(lsn))
    assert stored and stored == sorted(set(stored))  # each pair of runs got further
    last = follow(pg_dsn, mongo_uri, mongo_db.name, slot, "--stop-at-end", "--json")
    assert last.rc == 0, last.stderr
    moved = mongo_db.orders.find_one({"_id": 22})
    assert moved is not None and moved["doc"] == "98f13708210194c475687be6106a3b84" * 200
    assert moved["note"] == "g5"
    moved = mongo_db.orders.find_one({"_id": 2323})
    assert moved is not None and moved["doc"] == "37693cfc748049e45d87b8c7d8b9aacd" * 200
    assert mongo_db.orders.find_one({"_id": 20})["doc"] == "other"
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 40 - 1 + 1 + 1


def test_replayed_delete_then_move_onto_the_freed_key_keeps_the_unchanged_column(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    """One transaction deletes 22 and moves 20 onto it with its TOASTed `doc` unchanged: the
    run reads 20's document for `doc`. Killed after writing, before its checkpoint, the replay
    deletes 22 again (the moved document) and 20 is gone: the value exists only in what the
    killed run kept before its writes (cdc/lookups.py)."""
    slot = "fol_freed"
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", slot))
    assert copy.rc == 0, copy.stderr
    with pg_conn.transaction():
        pg_conn.execute("DELETE FROM orders WHERE id = 22")
        pg_conn.execute("UPDATE orders SET id = 22, note = 'moved' WHERE id = 20")  # doc 'u'
    args = ["follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
            "--db", mongo_db.name, "--slot", slot, "--stop-at-end"]  # fmt: skip
    assert _held_run(args, "follow_applied", 1, tmp_path / "held") is not None
    assert mongo_db.orders.find_one({"_id": 22})["note"] == "moved"  # the writes are in
    assert mongo_db.orders.find_one({"_id": 20}) is None
    _wait_inactive(pg_conn, slot)
    again = follow(pg_dsn, mongo_uri, mongo_db.name, slot, "--stop-at-end", "--json")
    assert again.rc == 0, again.stderr
    assert (again.json["transactions"], again.json["changes"]) == (1, 2)  # replayed
    moved = mongo_db.orders.find_one({"_id": 22})
    assert moved is not None and moved["doc"] == "98f13708210194c475687be6106a3b84" * 200
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 39
    # What the killed run kept is in the stats collection, and `status` does not list it.
    assert mongo_db.parallelsync_jobs.count_documents({"kind": "follow_lookup"}) == 1
    listing = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, "--json")
    assert listing.rc == 0 and "follow_lookup" not in listing.stdout, listing.stderr
