"""`follow` on a table idle for longer than wal_sender_timeout: the server does not drop it (its
standby status updates come in time), and the slot's confirmed_flush_lsn moves on with the WAL
other tables write, so an idle followed table does not make the source keep WAL.

wal_sender_timeout is set low on the session's cluster (shared by every test: restored after).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.cdc.peek import flush_position
from parallelsync.cdc.stream import ReplicationStream, parse_lsn
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_follow import (  # noqa: F401 (an autouse fixture)
    DDL,
    _no_leftover_slot,
)

TIMEOUT = "2s"
WAIT_S = 60.0


def _setting(dsn: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SHOW wal_sender_timeout").fetchone()
    return str(row[0]) if row else ""


@pytest.fixture
def short_sender_timeout(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> Iterator[None]:
    """wal_sender_timeout = 2 s for new sessions; the shared cluster gets its own value back."""
    pg_conn.execute(f"ALTER SYSTEM SET wal_sender_timeout = '{TIMEOUT}'")
    pg_conn.execute("SELECT pg_reload_conf()")
    try:
        deadline = time.monotonic() + WAIT_S
        while _setting(pg_dsn) != TIMEOUT:  # the postmaster rereads it asynchronously
            assert time.monotonic() < deadline, "wal_sender_timeout did not take effect"
            time.sleep(0.05)
        yield
    finally:
        pg_conn.execute("ALTER SYSTEM RESET wal_sender_timeout")
        pg_conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + WAIT_S
        while _setting(pg_dsn) == TIMEOUT and time.monotonic() < deadline:
            time.sleep(0.05)


def _slot(conn: psycopg.Connection[Any], name: str) -> tuple[bool, int]:
    row = conn.execute(
        "SELECT active, confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s",
        (name,),
    ).fetchone()
    assert row is not None
    return bool(row[0]), parse_lsn(str(row[1]))


def _wait(what: str, done: Any, proc: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + WAIT_S
    while not done():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"follow exited before {what}: {proc.communicate()}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_idle_table_longer_than_wal_sender_timeout(
    short_sender_timeout: None,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    slot = "fol_idle"
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", slot))
    assert copy.rc == 0, copy.stderr
    # The timeout is in force: a client that sends no status update is dropped by the server.
    silent = ReplicationStream(pg_dsn, slot, slot, application_name="silent")
    silent.open(0)
    try:
        _wait("the server to drop a silent client", lambda: not _slot(pg_conn, slot)[0])
    finally:
        silent.close()
    pg_conn.execute("UPDATE orders SET note = 'last change' WHERE id = 1")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", "follow", "--source", pg_dsn, "--table", "orders",
         "--target", mongo_uri, "--db", mongo_db.name, "--slot", slot, "--json",
         "--idle-exit", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        state_id = f"follow:{mongo_db.name}.orders"

        def applied() -> int:
            doc = mongo_db.parallelsync_jobs.find_one({"_id": state_id}) or {}
            return int(doc.get("applied_lsn_int") or 0) if doc.get("changes") else 0

        _wait("the change to be applied", lambda: applied() > 0, proc)
        # Only another table writes from now on: the followed one stays idle.
        pg_conn.execute("INSERT INTO audit (what) SELECT 'busy' FROM generate_series(1, 1000)")
        other = flush_position(pg_conn)
        assert other is not None
        target = parse_lsn(other)
        # While follow runs, the idle position is stored, then confirmed: the slot moves on.
        _wait("the slot to confirm the idle position", lambda: _slot(pg_conn, slot)[1] >= target,
              proc)  # fmt: skip
        assert applied() >= target  # stored before it was confirmed
        out, err = proc.communicate(timeout=WAIT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # Idle for 8 s, four times the timeout, and never dropped: it ends by its own rule.
    assert proc.returncode == 0, err
    assert '"status": "FINISHED"' in out and "idle for 8 s" in out
    assert "replication stream" not in err
    assert mongo_db.orders.find_one({"_id": 1})["note"] == "last change"
