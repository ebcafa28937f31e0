"""Concurrent writers while `copy --slot` runs and while `follow` runs (issue 14, "Tests").

Two writer threads, each with its own connection and its own rows (ids of one parity, so they
never wait for each other's locks), commit a mix of transactions: inserts, updates of a plain
column of rows whose TOASTed column then arrives unchanged, updates of the TOASTed column,
deletes, primary-key changes (with and without the TOASTed value), multi-row transactions that
touch a row several times, and rolled-back ones. Every UPDATE also increments `updates`, and each
writer keeps the committed count per row: a change lost or applied twice in effect shows there.

The copy is held at its first finished range (test hook) until the writers have committed a
number of transactions, with the other ranges still to copy; then `follow` runs in a subprocess
while they go on; then the writers stop, the follow is stopped with SIGTERM, and
`follow --stop-at-end` applies the rest. The collection must equal the table document by
document and byte for byte what a fresh copy writes.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import psycopg
from pymongo.database import Database

from tests.hooks import HOLD_DIR_ENV
from tests.integration.cli_helpers import copy_args
from tests.integration.test_follow import (  # noqa: F401 (an autouse fixture)
    _no_leftover_slot,
    assert_exact,
    follow,
)

ROWS = 20_000
# Transactions the writers may commit (both together) in each window: before the copy's hold,
# while it is held, after it (the copy's other ranges), and while the first follow runs. A
# budget, not a pace: on a loaded machine follow applies tens of transactions a second (two
# MongoDB round trips each), and writers left free would outrun it by thousands.
PER_WINDOW = 60
WAIT_S = 180.0
NEW_IDS = 1_000_000  # ids the writers make start here (inserts, key changes)

DDL = f"""
CREATE TABLE orders (
    id int8 PRIMARY KEY, note text, qty int4, updates int4 NOT NULL DEFAULT 0,
    price numeric(10,2), created timestamptz, doc text
);
-- Out of line and uncompressed: a value over 2 kB is TOASTed and arrives as 'u' (unchanged)
-- in an UPDATE that does not set it.
ALTER TABLE orders ALTER COLUMN doc SET STORAGE EXTERNAL;
INSERT INTO orders
SELECT i, 'note ' || i, i, 0, i * 1.25, timestamptz '2024-01-01 00:00:00+00' + i * interval '1 s',
       CASE WHEN i % 10 = 0 THEN repeat(md5(i::text), 200) ELSE 'short ' || i END
FROM generate_series(1, {ROWS}) i;
"""


class Row(NamedTuple):
    updates: int
    big: bool  # the doc is TOASTed


@dataclass
class Counts:
    transactions: int = 0  # committed
    changes: int = 0  # row changes of committed transactions
    rolled_back: int = 0
    kinds: dict[str, int] = field(default_factory=dict)


# One transaction's statements, cycled so that every kind occurs in every few transactions.
KINDS = ("insert", "note", "doc", "delete", "key", "multi", "note", "key_note", "multi",
         "rollback", "qty_null", "multi")  # fmt: skip


class Budget:
    """How many transactions the writers may start, together; raised window by window."""

    def __init__(self, allowed: int) -> None:
        self.allowed, self.started = allowed, 0
        self.stopped = False
        self._cond = threading.Condition()

    def grant(self, more: int) -> None:
        with self._cond:
            self.allowed += more
            self._cond.notify_all()

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()

    def take(self) -> bool:
        """Wait for a transaction to be allowed; False once the writers are to stop."""
        with self._cond:
            self._cond.wait_for(lambda: self.stopped or self.started < self.allowed)
            if self.stopped:
                return False
            self.started += 1
            return True


class Writer(threading.Thread):
    """Commits transactions on its own connection while the budget allows; `rows` is the
    committed state of its rows (id -> updates, TOASTed or not), `counts` what it committed."""

    def __init__(self, dsn: str, parity: int, budget: Budget) -> None:
        super().__init__(name=f"writer-{parity}", daemon=True)
        self.dsn, self.parity = dsn, parity
        self.rng = random.Random(parity)
        self.rows = {i: Row(0, i % 10 == 0) for i in range(2 - parity, ROWS + 1, 2)}
        self.next_id = NEW_IDS + parity
        self.counts = Counts()
        self.budget = budget
        self.error: BaseException | None = None
        self._lock = threading.Lock()

    @property
    def finished(self) -> tuple[int, int]:
        """(transactions finished, committed or rolled back; changes committed) so far."""
        with self._lock:
            c = self.counts
            return c.transactions + c.rolled_back, c.changes

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as conn:
                n = 0
                while self.budget.take():
                    self._transaction(conn, KINDS[n % len(KINDS)])
                    n += 1
        except BaseException as exc:  # re-raised by the test after join
            self.error = exc

    def _new_id(self) -> int:
        self.next_id += 2
        return self.next_id

    def _pick(self, rows: dict[int, Row], *, big: bool = False) -> int:
        ids = list(rows)
        pick = self.rng.choice(ids)
        for _ in range(30 if big else 0):  # prefer a TOASTed row where the kind wants one
            if rows[pick].big:
                break
            pick = self.rng.choice(ids)
        return pick

    def _transaction(self, conn: psycopg.Connection[Any], kind: str) -> None:
        rows = dict(self.rows)  # this transaction's view, kept only if it commits
        steps = [kind]
        if kind in ("multi", "rollback"):
            kinds = ("insert", "note", "doc", "delete", "key", "key_note", "qty_null")
            steps = [self.rng.choice(kinds) for _ in range(self.rng.randint(2, 6))]
            # a row touched twice in one transaction: inserted, then updated and moved
            steps += ["insert_update_move"]
        changes = 0
        with conn.transaction():
            for step in steps:
                changes += self._step(conn, step, rows)
            if kind == "rollback":
                raise psycopg.Rollback()
        with self._lock:
            c = self.counts
            c.kinds[kind] = c.kinds.get(kind, 0) + 1
            if kind == "rollback":
                c.rolled_back += 1
                return
            self.rows = rows
            c.transactions += 1
            c.changes += changes

    def _step(self, conn: psycopg.Connection[Any], step: str, rows: dict[int, Row]) -> int:
        ex = conn.execute
        if step in ("insert", "insert_update_move"):
            new, big = self._new_id(), self.rng.random() < 0.4
            doc = f"repeat(md5('{new}'), 200)" if big else f"'small {new}'"
            ex(f"INSERT INTO orders (id, note, qty, price, created, doc) VALUES "
               f"(%s, 'ins', %s, 1.5, now(), {doc})", (new, new % 97))  # fmt: skip
            rows[new] = Row(0, big)
            if step == "insert":
                return 1
            ex("UPDATE orders SET note = 'then set', updates = updates + 1 WHERE id = %s", (new,))
            moved = self._new_id()
            ex("UPDATE orders SET id = %s, updates = updates + 1 WHERE id = %s", (moved, new))
            rows[moved] = Row(2, rows.pop(new).big)
            return 3
        row_id = self._pick(rows, big=step in ("note", "key", "key_note"))
        if step == "delete":
            ex("DELETE FROM orders WHERE id = %s", (row_id,))
            del rows[row_id]
            return 1
        if step in ("key", "key_note"):
            new = self._new_id()
            note = ", note = 'moved'" if step == "key_note" else ""
            ex(f"UPDATE orders SET id = %s, updates = updates + 1{note} WHERE id = %s",
               (new, row_id))  # fmt: skip
            old = rows.pop(row_id)
            rows[new] = old._replace(updates=old.updates + 1)
            return 1
        sets = {
            "note": "note = md5(random()::text)",  # a TOASTed doc arrives as 'u'
            "doc": "doc = repeat(md5(random()::text), 150)",  # a new TOASTed value
            "qty_null": "qty = NULL, price = NULL",
        }[step]
        ex(f"UPDATE orders SET {sets}, updates = updates + 1 WHERE id = %s", (row_id,))
        old = rows[row_id]
        rows[row_id] = Row(old.updates + 1, old.big or step == "doc")
        return 1


def _wait(check: Callable[[], bool], what: str, *procs: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + WAIT_S
    while not check():
        for p in procs:
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"exited ({p.returncode}) before {what}:\n{out}\n{err}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _popen(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("PARALLELSYNC_", "SLOTNAME"))}
    return subprocess.Popen(
        [sys.executable, "-m", "parallelsync", *args], stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=full | (env or {}),
    )  # fmt: skip


def _finish(proc: subprocess.Popen[str], timeout: float = WAIT_S) -> tuple[str, str]:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err
    return out, err


def _json(out: str) -> dict[str, Any]:
    import json

    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    assert lines, out
    result: dict[str, Any] = json.loads(lines[-1])
    return result


def test_concurrent_writers_during_copy_and_follow_end_exact(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    slot = "fol_writers"
    pg_conn.execute(DDL)
    budget = Budget(PER_WINDOW)
    writers = [Writer(pg_dsn, 0, budget), Writer(pg_dsn, 1, budget)]

    def finished() -> int:
        return sum(w.finished[0] for w in writers)

    procs: list[subprocess.Popen[str]] = []
    try:
        for w in writers:  # already writing while the slot and its snapshot are made
            w.start()
        copy = _popen(
            *copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", slot, "--workers",
                       "3", "--ranges-per-worker", "6", "--batch-rows", "500", "--json"),
            env={"PARALLELSYNC_TEST_HOOKS": "range_done=tests.hooks:hold_until_released",
                 HOLD_DIR_ENV: str(tmp_path)},
        )  # fmt: skip
        procs.append(copy)
        _wait(lambda: (tmp_path / "reached").exists(), "the copy's first finished range", copy)
        # Everything committed from here on is after the snapshot: it must come from the slot.
        after_snapshot = sum(w.finished[1] for w in writers)
        held_at = finished()
        budget.grant(PER_WINDOW)
        _wait(lambda: finished() >= held_at + PER_WINDOW, "writes during the copy", copy)
        budget.grant(PER_WINDOW)  # they go on while the copy's other ranges are read
        (tmp_path / "release").write_text("go")
        copy_out, copy_err = _finish(copy)
        copied = _json(copy_out)
        assert copied["status"] == "FINISHED", copy_err
        assert copied["ranges"] >= 12  # small ranges: most are copied after the hold

        live = _popen("follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
                      "--db", mongo_db.name, "--slot", slot, "--json")  # fmt: skip
        procs.append(live)
        state_id = f"follow:{mongo_db.name}.orders"

        def applied() -> int:
            doc = mongo_db.parallelsync_jobs.find_one({"_id": state_id}) or {}
            return int(doc.get("changes") or 0) if doc.get("state") == "RUNNING" else 0

        following_at = budget.allowed
        budget.grant(PER_WINDOW)
        _wait(lambda: applied() > 0 and finished() >= following_at + PER_WINDOW,
              "writes applied by the running follow", live)  # fmt: skip
        budget.stop()
        for w in writers:
            w.join(WAIT_S)
            assert not w.is_alive(), f"{w.name} did not stop"
            if w.error is not None:
                raise w.error
        live.send_signal(signal.SIGTERM)
        live_out, live_err = _finish(live)
    finally:
        budget.stop()
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    first = _json(live_out)
    assert first["status"] == "STOPPED", live_err
    assert first["start_lsn"] == copied["consistent_lsn"]
    state = mongo_db.parallelsync_jobs.find_one({"_id": state_id})
    assert state is not None and state["state"] == "STOPPED"
    assert state["transactions"] == first["transactions"] > 0
    assert state["changes"] == first["changes"] > 0
    assert state["applied_lsn"] == first["applied_lsn"]

    last = follow(pg_dsn, mongo_uri, mongo_db.name, slot, "--stop-at-end", "--json")
    assert last.rc == 0, last.stderr
    second = last.json
    assert second["status"] == "FINISHED" and second["start_lsn"] == first["applied_lsn"]
    state = mongo_db.parallelsync_jobs.find_one({"_id": state_id})
    assert state is not None and state["state"] == "FINISHED"
    assert state["changes"] == second["changes"]

    # The writers did every kind of transaction, some rolled back.
    for w in writers:
        assert set(w.counts.kinds) == set(KINDS), w.counts.kinds
        assert w.counts.rolled_back > 0
    # Every change committed after the snapshot was applied once: at least those committed
    # after the hold, at most all of them (some committed before the snapshot are in it).
    applied_changes = first["changes"] + second["changes"]
    total = sum(w.counts.changes for w in writers)
    assert total - after_snapshot <= applied_changes <= total

    # The table is what the writers committed: each row's updates, no rolled-back row.
    expected = {i: r.updates for w in writers for i, r in w.rows.items()}
    table = dict(pg_conn.execute("SELECT id, updates FROM orders").fetchall())
    assert table == expected
    # The collection equals the table document by document, and a fresh copy's bytes.
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == len(expected)
    # Nothing applied twice in effect, nothing lost: each document's counter is the row's.
    docs = {d["_id"]: d["updates"] for d in mongo_db.orders.find({}, {"updates": 1})}
    assert docs == expected
    assert sum(docs.values()) > 0
    # The slot is confirmed up to the end: it holds no WAL of the table any more.
    row = pg_conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = %s", (slot,)
    ).fetchone()
    assert row is not None and row[0] == second["applied_lsn"]
