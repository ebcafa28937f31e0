"""`parallelsync follow` (issue 14, first slice): after `copy --slot`, the slot's changes are
applied so that the collection equals the table document by document, and each document is byte
for byte what a fresh copy writes. Real PostgreSQL (wal_level=logical) and SecantusDB.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from parallelsync.cdc.decode import Begin, Commit, Insert, Message, Relation, Update, decode
from parallelsync.cdc.stream import Keepalive, ReplicationStream, XLogData, parse_lsn
from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.integration.test_copy import assert_collection_equals_table

RAW = CodecOptions(document_class=RawBSONDocument)
DDL = """
CREATE TABLE orders (
    id int8 PRIMARY KEY, note text, qty int4, price numeric(10,2), tags text[],
    created timestamptz, doc text
);
-- Stored out of line and uncompressed, so a value over 2 kB is TOASTed: an UPDATE of other
-- columns then sends it as 'u' (unchanged), never its bytes.
ALTER TABLE orders ALTER COLUMN doc SET STORAGE EXTERNAL;
CREATE TABLE audit (id serial PRIMARY KEY, what text);
INSERT INTO orders
SELECT i, 'note ' || i, i * 10, i * 1.25, ARRAY['t' || i, 'x'],
       timestamptz '2024-01-01 00:00:00+00' + i * interval '1 minute',
       repeat(md5(i::text), 200)
FROM generate_series(1, 40) i;
"""


def follow(pg_dsn: str, mongo_uri: str, db: str, slot: str, *extra: str) -> Run:
    return run_cli(
        "follow", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri, "--db", db,
        "--slot", slot, *extra,
    )  # fmt: skip


def raw_docs(db: Database[Any], name: str) -> dict[Any, bytes]:
    coll = db.get_collection(name, codec_options=RAW)
    return {doc["_id"]: bytes(doc.raw) for doc in coll.find()}


def assert_exact(pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
                 db: Database[Any]) -> int:  # fmt: skip
    """The followed collection equals the table, and a fresh copy writes the very same bytes."""
    n = assert_collection_equals_table(pg_conn, db, "orders", "orders")
    fresh = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, db.name, "--collection", "fresh"))
    assert fresh.rc == 0, fresh.stderr
    assert raw_docs(db, "orders") == raw_docs(db, "fresh")
    return n


def changes(conn: psycopg.Connection[Any]) -> None:
    conn.execute(
        "INSERT INTO orders (id, note, qty, doc) VALUES (100, 'new', 1, repeat('z', 3000))"
    )
    conn.execute("UPDATE orders SET note = 'toast kept' WHERE id = 2")  # doc arrives as 'u'
    conn.execute("UPDATE orders SET doc = repeat(md5('new'), 100) WHERE id = 3")
    conn.execute("UPDATE orders SET qty = NULL, tags = NULL WHERE id = 4")
    conn.execute("DELETE FROM orders WHERE id IN (5, 6)")
    conn.execute("UPDATE orders SET id = 1005 WHERE id = 7")  # key change, doc unchanged ('u')
    conn.execute("UPDATE orders SET id = 1008, doc = 'short' WHERE id = 8")  # key change, all sent
    with conn.transaction():  # one transaction, two tables: audit's rows are not the target's
        conn.execute("INSERT INTO audit (what) VALUES ('before')")
        conn.execute("UPDATE orders SET price = price * 2 WHERE id BETWEEN 10 AND 14")
        conn.execute("INSERT INTO audit (what) VALUES ('after')")
        conn.execute("DELETE FROM orders WHERE id = 15")
    conn.execute("INSERT INTO orders (id, note) VALUES (116, 'gone'), (117, 'kept')")
    conn.execute("DELETE FROM orders WHERE id = 116")  # inserted and deleted after the copy


def test_follow_after_copy_applies_every_kind_of_change(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_a",
                              "--json"))  # fmt: skip
    assert copy.rc == 0, copy.stderr
    pg_conn.execute("ALTER PUBLICATION fol_a ADD TABLE audit")  # its changes reach the stream
    changes(pg_conn)
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_a", "--stop-at-end", "--json")
    assert run.rc == 0, run.stderr
    out = run.json
    assert out["status"] == "FINISHED"
    # It starts exactly where the copy's snapshot was taken.
    assert out["start_lsn"] == copy.json["consistent_lsn"]
    # Ten transactions: an insert, three updates, a delete of two, two key changes, the
    # two-table one (5 updates and a delete of orders), an insert of two, a delete.
    assert out["transactions"] == 10
    assert out["changes"] == 1 + 3 + 2 + 2 + 6 + 2 + 1
    assert parse_lsn(out["applied_lsn"]) >= parse_lsn(out["end_lsn"])
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 40 + 1 - 2 - 1 + 1
    assert mongo_db.orders.find_one({"_id": 2})["doc"] == "c81e728d9d4c2f636f067f89cc14862c" * 200
    assert mongo_db.orders.count_documents({"_id": {"$in": [7, 8, 116]}}) == 0
    # The checkpoint is stored next to the job documents, and the slot confirmed up to it.
    state = mongo_db.parallelsync_jobs.find_one({"_id": f"follow:{mongo_db.name}.orders"})
    assert state is not None and state["applied_lsn"] == out["applied_lsn"]
    slot = pg_conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = 'fol_a'"
    ).fetchone()
    assert slot is not None and slot[0] == out["applied_lsn"]


def test_restarted_follow_applies_nothing_twice(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    assert (
        run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_b")).rc == 0
    )
    pg_conn.execute("UPDATE orders SET qty = qty + 1 WHERE id <= 3")
    first = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_b", "--stop-at-end", "--json")
    assert first.rc == 0, first.stderr
    assert (first.json["transactions"], first.json["changes"]) == (1, 3)
    pg_conn.execute("UPDATE orders SET qty = qty + 1 WHERE id <= 3")
    pg_conn.execute("TRUNCATE orders")
    pg_conn.execute("INSERT INTO orders (id, note) VALUES (1, 'after truncate')")
    second = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_b", "--stop-at-end", "--json")
    assert second.rc == 0, second.stderr
    # It resumes at the first run's checkpoint and applies only the new transactions.
    assert second.json["start_lsn"] == first.json["applied_lsn"]
    assert (second.json["transactions"], second.json["changes"]) == (3, 3 + 1 + 1)
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 1
    third = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_b", "--stop-at-end", "--json")
    assert third.rc == 0, third.stderr
    assert (third.json["transactions"], third.json["changes"]) == (0, 0)


def test_schema_change_stops_before_writing(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    assert (
        run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_c")).rc == 0
    )
    pg_conn.execute("UPDATE orders SET note = 'before' WHERE id = 1")
    first = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_c", "--stop-at-end", "--json")
    assert first.rc == 0, first.stderr
    pg_conn.execute("ALTER TABLE orders ADD COLUMN extra int")
    pg_conn.execute("UPDATE orders SET note = 'after', extra = 1 WHERE id = 2")
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_c", "--stop-at-end")
    assert run.rc == 3, run.stderr
    assert "table public.orders changed (only in the table now: extra;" in run.stderr
    assert mongo_db.orders.find_one({"_id": 1})["note"] == "before"  # applied: the old shape
    assert mongo_db.orders.find_one({"_id": 2})["note"] == "note 2"  # not written
    assert "extra" not in mongo_db.orders.find_one({"_id": 2})
    state = mongo_db.parallelsync_jobs.find_one({"_id": f"follow:{mongo_db.name}.orders"})
    assert state is not None and state["state"] == "FAILED"
    assert state["last_error"]["message"].startswith("table public.orders changed")
    assert state["last_error"]["job_id"].startswith("follow-")


def test_schema_change_before_the_first_run_stops_it(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """The documents' columns are the copy's (its job document), so the first run sees the
    dropped column in the catalog before it reads the stream. (The stream's own check: a change
    after the start, test_copy_follow.py's schema test and test_follow_schema.py.)"""
    pg_conn.execute(DDL)
    assert (
        run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_f")).rc == 0
    )
    pg_conn.execute("UPDATE orders SET note = 'old shape' WHERE id = 1")
    pg_conn.execute("ALTER TABLE orders DROP COLUMN qty")
    pg_conn.execute("UPDATE orders SET note = 'new shape' WHERE id = 2")
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_f", "--stop-at-end")
    assert run.rc == 3, run.stderr
    assert "changed (missing in the table now: qty;" in run.stderr
    assert mongo_db.orders.find_one({"_id": 2})["note"] == "note 2"


def test_bad_follow_inputs_are_refused_clearly(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_none", "--stop-at-end")
    assert run.rc == 3
    assert "replication slot 'fol_none' does not exist: run `parallelsync copy" in run.stderr
    both = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_none", "--stop-at-end", "--idle-exit", "5")
    assert both.rc == 2 and "exclude each other" in both.stderr
    pg_conn.execute("SELECT pg_create_logical_replication_slot('fol_d', 'pgoutput')")
    pg_conn.execute("UPDATE orders SET qty = 0 WHERE id = 1")  # a publication made now misses it
    nopub = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_d", "--stop-at-end")
    assert nopub.rc == 3 and "publication 'fol_d' does not exist, and follow" in nopub.stderr
    # The same checks as a copy's publication: one that drops deletes would lose changes unseen.
    pg_conn.execute("CREATE PUBLICATION fol_d FOR TABLE orders WITH (publish = 'insert, update')")
    partial = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_d", "--stop-at-end")
    assert partial.rc == 3, partial.stderr
    assert "publication 'fol_d' does not publish delete, truncate" in partial.stderr
    pg_conn.execute("ALTER PUBLICATION fol_d SET (publish = 'insert, update, delete, truncate')")
    pg_conn.execute("ALTER PUBLICATION fol_d DROP TABLE orders")
    elsewhere = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_d", "--stop-at-end")
    assert elsewhere.rc == 3 and "does not publish public.orders" in elsewhere.stderr
    assert "orders" not in mongo_db.list_collection_names()


def test_stream_decodes_a_real_transaction(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    """The captured stream of a real server decodes into the messages the SQL made."""
    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text, big text)")
    pg_conn.execute("ALTER TABLE t ALTER COLUMN big SET STORAGE EXTERNAL")
    pg_conn.execute("CREATE PUBLICATION fol_e FOR TABLE t")
    pg_conn.execute("SELECT pg_create_logical_replication_slot('fol_e', 'pgoutput')")
    pg_conn.execute("INSERT INTO t VALUES (1, 'a', repeat('x', 3000))")
    pg_conn.execute("UPDATE t SET v = 'b' WHERE id = 1")
    pg_conn.execute("SELECT pg_logical_emit_message(true, 'test', 'end')")
    stream = ReplicationStream(pg_dsn, "fol_e", "fol_e", application_name="test")
    stream.open(0)
    got: list[Any] = []
    try:
        while not any(isinstance(m, Message) for m in got):
            msg = stream.read(30)
            assert msg is not None, "the server sent nothing within 30 s"
            if isinstance(msg, XLogData):
                got.append(decode(msg.payload))
            else:
                assert isinstance(msg, Keepalive)
    finally:
        stream.close()
    kinds = [type(m).__name__ for m in got]
    assert kinds == ["Begin", "Relation", "Insert", "Commit", "Begin", "Update", "Commit", "Begin",
                     "Message"]  # fmt: skip
    rel, ins, upd = got[1], got[2], got[5]
    assert isinstance(rel, Relation) and [c.name for c in rel.columns] == ["id", "v", "big"]
    assert isinstance(ins, Insert) and ins.new[0].data == b"\x00\x00\x00\x01"  # binary int4
    assert ins.new[2].data == b"x" * 3000
    assert isinstance(upd, Update) and [v.kind for v in upd.new] == ["b", "b", "u"]
    assert isinstance(got[0], Begin) and isinstance(got[3], Commit)
    assert got[3].end_lsn > got[0].final_lsn


@pytest.fixture(autouse=True)
def _no_leftover_slot(pg_conn: psycopg.Connection[Any]) -> Any:
    yield
    pg_conn.execute(
        "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
        "WHERE slot_name LIKE 'fol_%' AND database = current_database() AND NOT active"
    )


def test_sigterm_stops_after_the_transaction_in_flight(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    import os
    import signal
    import subprocess
    import sys
    import time

    pg_conn.execute(DDL)
    assert (
        run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_g")).rc == 0
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", "follow", "--source", pg_dsn, "--table", "orders",
         "--target", mongo_uri, "--db", mongo_db.name, "--slot", "fol_g", "--json",
         "--idle-exit", "120"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    try:
        state_id = f"follow:{mongo_db.name}.orders"
        pg_conn.execute("UPDATE orders SET note = 'live' WHERE id = 1")
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:  # wait for the state: the change applied
            doc = mongo_db.orders.find_one({"_id": 1})
            if doc is not None and doc["note"] == "live" and proc.poll() is None:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.1)
        else:
            raise AssertionError("the running follow never applied the change")
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert '"status": "STOPPED"' in out and "stopped by a signal" in out
    state = mongo_db.parallelsync_jobs.find_one({"_id": state_id})
    assert state is not None and state["state"] == "STOPPED" and state["changes"] == 1


def test_follow_statistics_in_the_result_and_the_state_document(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(DDL)
    assert (
        run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_s")).rc == 0
    )
    pg_conn.execute("ALTER PUBLICATION fol_s ADD TABLE audit")
    changes(pg_conn)
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_s", "--stop-at-end", "--json",
                 "--max-retained-wal-mb", "0")  # fmt: skip
    assert run.rc == 0, run.stderr
    out = run.json
    assert (out["transactions"], out["changes"]) == (10, 17)
    # Caught up with the server's WAL as measured at the end: no lag in bytes or seconds.
    assert out["lag_bytes"] == 0 and out["lag_seconds"] == 0.0
    assert parse_lsn(out["server_lsn"]) <= parse_lsn(out["applied_lsn"])
    assert out["changes_per_second"] > 0
    slot = pg_conn.execute(
        "SELECT pg_wal_lsn_diff(%s::pg_lsn, restart_lsn)::bigint FROM pg_replication_slots "
        "WHERE slot_name = 'fol_s'", (out["server_lsn"],)
    ).fetchone()  # fmt: skip
    assert slot is not None and out["retained_wal_bytes"] >= slot[0] > 0
    # Past the threshold (0 MB here), a warning names the slot and the WAL it keeps.
    assert "warning: slot 'fol_s' retains " in run.stderr
    assert "more than --max-retained-wal-mb 0 MB" in run.stderr
    state = mongo_db.parallelsync_jobs.find_one({"_id": f"follow:{mongo_db.name}.orders"})
    assert state is not None and state["state"] == "FINISHED"
    assert (state["transactions"], state["changes"], state["lag_bytes"]) == (10, 17, 0)
    assert state["applied_lsn"] == out["applied_lsn"] and state["server_lsn"] == out["server_lsn"]
    assert state["changes_per_second"] == out["changes_per_second"]
    assert state["error"] is None and "last_error" not in state
    # Below the threshold: no warning.
    pg_conn.execute("UPDATE orders SET qty = 7 WHERE id = 1")
    quiet = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_s", "--stop-at-end", "--json")
    assert quiet.rc == 0, quiet.stderr
    assert (quiet.json["changes"], quiet.json["lag_bytes"]) == (1, 0)
    assert "warning: slot" not in quiet.stderr


def test_follow_progress_lines_while_running(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    import json

    pg_conn.execute(DDL)
    assert (
        run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_p")).rc == 0
    )
    pg_conn.execute("UPDATE orders SET qty = 1 WHERE id <= 5")
    plain = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_p", "--idle-exit", "1.5",
                   "--progress-seconds", "0.2")  # fmt: skip
    assert plain.rc == 0, plain.stderr
    lines = [ln for ln in plain.stderr.splitlines() if ln.startswith("[follow] ")]
    assert "[follow] started" in lines and lines[-1].startswith("[follow] done in ")
    ticks = [ln for ln in lines if "changes applied" in ln]
    assert ticks, plain.stderr
    assert "1 transactions, 5 changes applied" in ticks[-1] and ", lag " in ticks[-1]
    assert "slot retains " in ticks[-1]
    pg_conn.execute("UPDATE orders SET qty = 2 WHERE id <= 2")
    js = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_p", "--idle-exit", "1.5",
                "--progress-seconds", "0.2", "--log-format", "json")  # fmt: skip
    assert js.rc == 0, js.stderr
    events = [json.loads(ln) for ln in js.stderr.splitlines() if ln.startswith("{")]
    progress = [e for e in events if e["event"] == "progress" and e["phase"] == "follow"]
    assert progress and progress[-1]["changes"] == 2 and progress[-1]["lag_bytes"] is not None
    summary = [e for e in events if e["event"] == "summary"]
    assert summary and summary[0]["changes"] == 2 and summary[0]["status"] == "FINISHED"


def _follow_peak_rss_kb(*args: str) -> tuple[Run, int]:
    """follow run under a small parent that reports the peak RSS of its one child (KiB)."""
    import json
    import os
    import subprocess
    import sys

    probe = (
        "import resource, subprocess, sys, json\n"
        "p = subprocess.run([sys.executable, '-m', 'parallelsync', *sys.argv[1:]],"
        " capture_output=True, text=True, stdin=subprocess.DEVNULL)\n"
        "print(json.dumps([p.returncode, p.stdout, p.stderr,"
        " resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss]))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    out = subprocess.run([sys.executable, "-c", probe, "follow", *args], capture_output=True,
                         text=True, env=env, timeout=600, check=True)  # fmt: skip
    rc, stdout, stderr, rss = json.loads(out.stdout)
    return Run(rc, stdout, stderr), int(rss)


def test_one_transaction_of_100k_changes_is_written_in_chunks(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """A transaction's changes go out in bulk writes of at most 1000 operations as they arrive:
    memory does not grow with the transaction (peak RSS for 100k changes is that of 1k)."""
    pg_conn.execute(DDL)
    copy = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_big"))
    assert copy.rc == 0, copy.stderr
    args = ("--source", pg_dsn, "--table", "orders", "--target", mongo_uri, "--db",
            mongo_db.name, "--slot", "fol_big", "--stop-at-end", "--json")  # fmt: skip
    rows = "SELECT i, 'bulk ' || i, i, i * 0.5, ARRAY['a', 'b'], now(), repeat('d', 200) "
    pg_conn.execute(f"INSERT INTO orders {rows} FROM generate_series(1000, 1999) i")
    small, small_rss = _follow_peak_rss_kb(*args)
    assert small.rc == 0, small.stderr
    assert (small.json["transactions"], small.json["changes"]) == (1, 1000)
    with pg_conn.transaction():  # 100,000 changes in one transaction: inserts, then updates
        pg_conn.execute(f"INSERT INTO orders {rows} FROM generate_series(10000, 59999) i")
        pg_conn.execute("UPDATE orders SET qty = -qty WHERE id BETWEEN 10000 AND 59999")
    big, big_rss = _follow_peak_rss_kb(*args)
    assert big.rc == 0, big.stderr
    out = big.json
    assert (out["transactions"], out["changes"]) == (1, 100_000)
    assert out["largest_bulk_write"] == 1000 and out["bulk_writes"] >= 100
    assert mongo_db.orders.count_documents({}) == 40 + 1000 + 50_000
    assert mongo_db.orders.count_documents({"qty": {"$lt": 0}}) == 50_000
    # Flat: 100 times the changes, not 100 times the memory (all of them held would be
    # hundreds of MB of operations).
    assert big_rss - small_rss < 40_000, (small_rss, big_rss)


def test_partitioned_table_is_refused_with_the_reason(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE parts (id int8 PRIMARY KEY, v text) PARTITION BY RANGE (id)")
    pg_conn.execute("CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (100)")
    run = run_cli(
        "follow", "--source", pg_dsn, "--table", "parts", "--target", mongo_uri, "--db",
        mongo_db.name, "--slot", "fol_parts", "--stop-at-end",
    )  # fmt: skip
    assert run.rc == 2, run.stderr
    assert "public.parts is partitioned, and follow does not follow partitioned tables yet: " in (
        run.stderr
    )
    assert "a TRUNCATE of one partition is not sent at all" in run.stderr
    assert "follow each partition as a table of its own" in run.stderr
