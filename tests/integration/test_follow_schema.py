"""`follow` and a column added mid-stream, under the mapping's new-columns policy: with
`[mapping] include` and `new_columns = "ignore"` the column a fresh copy leaves out does not stop
follow, and every document stays byte for byte a fresh copy's; a retyped mapped column, or
`new_columns = "copy"`, still stops it before anything of the new shape is written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_follow import (  # noqa: F401 (an autouse fixture)
    DDL,
    _no_leftover_slot,
    follow,
    raw_docs,
)

INCLUDE = '[mapping]\ninclude = ["id", "note", "qty", "doc"]\n'


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "sync.toml"
    path.write_text(text)
    return str(path)


def copied(pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, db: Database[Any],
           slot: str, cfg: str) -> None:  # fmt: skip
    pg_conn.execute(DDL)
    run = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, db.name, "--slot", slot,
                             "--config", cfg))  # fmt: skip
    assert run.rc == 0, run.stderr


def add_column_mid_stream(pg_conn: psycopg.Connection[Any]) -> None:
    pg_conn.execute("UPDATE orders SET note = 'old shape' WHERE id = 1")
    pg_conn.execute("ALTER TABLE orders ADD COLUMN extra int")
    pg_conn.execute("UPDATE orders SET note = 'new shape', extra = 7 WHERE id = 2")
    pg_conn.execute("UPDATE orders SET note = 'toast kept', extra = 8 WHERE id = 3")  # doc: 'u'
    pg_conn.execute("INSERT INTO orders (id, note, qty, extra) VALUES (200, 'new row', 2, 9)")
    pg_conn.execute("UPDATE orders SET id = 300 WHERE id = 4")  # key change, doc unchanged
    pg_conn.execute("DELETE FROM orders WHERE id = 5")


def test_added_column_the_mapping_ignores_does_not_stop_follow(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    cfg = config(tmp_path, INCLUDE + 'new_columns = "ignore"\n')
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fs_a", cfg)
    add_column_mid_stream(pg_conn)
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fs_a", "--stop-at-end", "--json",
                 "--config", cfg)  # fmt: skip
    assert run.rc == 0, run.stderr
    assert (run.json["transactions"], run.json["changes"]) == (6, 6)
    # A restart compares the table now (with extra) with the documents' columns: no stop.
    pg_conn.execute("UPDATE orders SET qty = 99, extra = 1 WHERE id = 6")
    again = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fs_a", "--stop-at-end", "--json",
                   "--config", cfg)  # fmt: skip
    assert again.rc == 0, again.stderr
    assert again.json["changes"] == 1
    fresh = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--collection",
                               "fresh", "--config", cfg))  # fmt: skip
    assert fresh.rc == 0, fresh.stderr
    followed = raw_docs(mongo_db, "orders")
    assert followed == raw_docs(mongo_db, "fresh") and len(followed) == 40
    toasted = pg_conn.execute("SELECT doc FROM orders WHERE id = 3").fetchone()
    assert toasted is not None and len(toasted[0]) == 6400
    assert mongo_db.orders.find_one({"_id": 3})["doc"] == toasted[0]  # kept through the 'u'
    assert "extra" not in mongo_db.orders.find_one({"_id": 2})


def test_added_column_a_fresh_copy_would_write_stops_follow(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    cfg = config(tmp_path, INCLUDE + 'new_columns = "copy"\n')
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fs_b", cfg)
    pg_conn.execute("UPDATE orders SET note = 'old shape' WHERE id = 1")
    first = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fs_b", "--stop-at-end", "--config", cfg)
    assert first.rc == 0, first.stderr
    add_column_mid_stream(pg_conn)
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fs_b", "--stop-at-end", "--config", cfg)
    assert run.rc == 3, run.stderr
    assert "table public.orders changed (only in the table now: extra;" in run.stderr
    assert mongo_db.orders.find_one({"_id": 1})["note"] == "old shape"  # before the change
    assert mongo_db.orders.find_one({"_id": 2})["note"] == "note 2"  # not written


def test_retyped_mapped_column_stops_follow_even_when_new_columns_are_ignored(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    cfg = config(tmp_path, INCLUDE + 'new_columns = "ignore"\n')
    copied(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_fs_c", cfg)
    pg_conn.execute("ALTER TABLE orders ADD COLUMN extra int")
    pg_conn.execute("UPDATE orders SET extra = 1 WHERE id = 1")
    pg_conn.execute("ALTER TABLE orders ALTER COLUMN qty TYPE int8")
    pg_conn.execute("UPDATE orders SET note = 'retyped' WHERE id = 2")
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fs_c", "--stop-at-end", "--config", cfg)
    assert run.rc == 3, run.stderr
    # Seen in the catalog at the start (the documents' columns are the copy's), before the
    # stream: nothing of the new shape is written.
    assert (
        "table public.orders changed (only in the table now: extra; "
        "another type in the table now: qty;" in run.stderr
    )
    assert mongo_db.orders.find_one({"_id": 2})["note"] == "note 2"


def test_a_column_added_between_the_copy_and_the_first_follow_stops_it(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
) -> None:  # fmt: skip
    """The documents' shape is the copy's, recorded in its job document, not the table's at the
    first follow: a fresh copy would write the new column into every document, so applying the
    changes would leave it in some documents only."""
    pg_conn.execute(DDL)
    run = run_cli(*copy_args(pg_dsn, "orders", mongo_uri, mongo_db.name, "--slot", "fol_fs_d"))
    assert run.rc == 0, run.stderr
    job = mongo_db.parallelsync_jobs.find_one()
    assert job is not None and ["extra", 23] not in job["source"]["columns"]
    assert ["note", 25] in job["source"]["columns"]
    pg_conn.execute("ALTER TABLE orders ADD COLUMN extra int")
    pg_conn.execute("UPDATE orders SET note = 'new shape', extra = 7 WHERE id = 2")
    first = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_fs_d", "--stop-at-end")
    assert first.rc == 3, first.stderr
    assert "table public.orders changed (only in the table now: extra;" in first.stderr
    assert mongo_db.orders.find_one({"_id": 2})["note"] == "note 2"  # not written
    assert "extra" not in mongo_db.orders.find_one({"_id": 2})
