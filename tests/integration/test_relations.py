"""Which relations a copy reads (issue 10 items 3, 4): a plain table `FROM ONLY` itself unless
`--include-children`, rows without a key named by (relation, ctid) when the read spans several
relations, and foreign tables only with `--allow-foreign-table`."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_copy import no_temp_collections
from tests.integration.test_shapes import tid_id


def inheritance(conn: psycopg.Connection[Any], key: bool) -> None:
    pk = "id int4 PRIMARY KEY" if key else "id int4"
    conn.execute(f"CREATE TABLE parent ({pk}, v text)")
    conn.execute("CREATE TABLE child1 () INHERITS (parent)")
    conn.execute("CREATE TABLE child2 (extra int4) INHERITS (parent)")
    conn.execute("INSERT INTO parent SELECT g, 'p' || g FROM generate_series(1, 600) g")
    conn.execute("INSERT INTO child1 SELECT g, 'c' || g FROM generate_series(601, 1000) g")
    conn.execute("INSERT INTO child2 SELECT g, 'd' || g, 7 FROM generate_series(1001, 1200) g")
    conn.execute("ANALYZE parent, child1, child2")


def test_parent_without_key_is_read_alone_or_with_its_children(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: read with its children, whose ctids restart at (0,1): exit 7 "the chosen key is
    # not unique", which is false.
    inheritance(pg_conn, key=False)
    run = run_cli(*copy_args(pg_dsn, "parent", mongo_uri, mongo_db.name, "--workers", "2",
                             "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    rows = pg_conn.execute("SELECT ctid::text, id, v FROM ONLY parent").fetchall()
    docs = {d["_id"]: d for d in mongo_db.parent.find()}
    assert len(docs) == len(rows) == 600
    for ctid, ident, v in rows:
        assert docs[tid_id(ctid)] == {"_id": tid_id(ctid), "id": ident, "v": v}

    run = run_cli(*copy_args(pg_dsn, "parent", mongo_uri, mongo_db.name, "--workers", "2",
                             "--include-children", "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert run.json["ranges"] >= 3  # at least one per relation
    rows = pg_conn.execute("SELECT tableoid::regclass::text, ctid::text, id, v FROM parent")
    expected = {(rel, tid_id(ctid)): (ident, v) for rel, ctid, ident, v in rows.fetchall()}
    docs = {(d["_id"]["rel"], d["_id"]["ctid"]): d for d in mongo_db.parent.find()}
    assert len(expected) == 1200 and mongo_db.parent.count_documents({}) == len(docs) == 1200
    for ident, doc in docs.items():
        assert list(doc["_id"]) == ["rel", "ctid"] and (doc["id"], doc["v"]) == expected[ident]
    assert {rel for rel, _ in docs} == {"parent", "child1", "child2"}
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None
    assert {tuple(r["relation"]) for r in job["ranges"]} == {
        ("public", "parent"), ("public", "child1"), ("public", "child2")
    }  # fmt: skip
    assert all('FROM ONLY "public".' in r["query"] for r in job["ranges"])


def test_parent_with_key_leaves_its_children_out_unless_asked(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: the children's 600 rows were silently included.
    inheritance(pg_conn, key=True)
    run = run_cli(*copy_args(pg_dsn, "parent", mongo_uri, mongo_db.name, "--workers", "2"))
    assert run.rc == 0, run.stderr
    assert sorted(d["_id"] for d in mongo_db.parent.find({}, {"_id": 1})) == list(range(1, 601))

    plan = run_cli("plan", "--source", pg_dsn, "--table", "parent", "--include-children",
                   "--json")  # fmt: skip
    assert plan.rc == 0, plan.stderr
    run = run_cli(*copy_args(pg_dsn, "parent", mongo_uri, mongo_db.name, "--workers", "2",
                             "--include-children"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert sorted(d["_id"] for d in mongo_db.parent.find({}, {"_id": 1})) == list(range(1, 1201))

    # The parent's primary key does not hold across its children: checked under the snapshot.
    pg_conn.execute("INSERT INTO child1 VALUES (5, 'twin of 5')")
    run = run_cli(*copy_args(pg_dsn, "parent", "null:", "", "--include-children"))
    assert run.rc == 7, run.stderr
    assert "the chosen key is not unique" in run.stderr


def test_materialized_view_with_a_unique_index(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # A materialized view cannot declare NOT NULL: its unique index proves the key unique, and
    # NULL keys get a range of their own.
    pg_conn.execute("CREATE TABLE base (id int4, v text)")
    pg_conn.execute("INSERT INTO base SELECT g, 'v' || g FROM generate_series(1, 1500) g")
    pg_conn.execute("INSERT INTO base VALUES (NULL, 'no id')")
    pg_conn.execute("CREATE MATERIALIZED VIEW mv AS SELECT * FROM base")
    run = run_cli(*copy_args(pg_dsn, "mv", mongo_uri, mongo_db.name, "--key", "id"))
    assert run.rc == 3 and "no unique index or constraint of table public.mv" in run.stderr
    pg_conn.execute("CREATE UNIQUE INDEX ON mv (id)")
    pg_conn.execute("ANALYZE mv")
    run = run_cli(*copy_args(pg_dsn, "mv", mongo_uri, mongo_db.name, "--key", "id",
                             "--workers", "2", "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert mongo_db.mv.count_documents({}) == 1501
    assert mongo_db.mv.find_one({"_id": None}) == {"_id": None, "v": "no id"}


def _fdw_available(conn: psycopg.Connection[Any]) -> bool:
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'postgres_fdw'")
    return row.fetchone() is not None


def test_foreign_table_needs_allow_foreign_table(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: copied without a word, each range at its own moment (a row inserted after the job
    # started appeared in the target).
    if not _fdw_available(pg_conn):
        pytest.skip("postgres_fdw is not installed with this PostgreSQL")
    pg_conn.execute("CREATE EXTENSION postgres_fdw")
    pg_conn.execute(
        "CREATE SERVER loop FOREIGN DATA WRAPPER postgres_fdw OPTIONS "
        f"(host '127.0.0.1', port '{pg_conn.info.port}', dbname '{pg_conn.info.dbname}')"
    )
    pg_conn.execute("CREATE USER MAPPING FOR CURRENT_USER SERVER loop OPTIONS (user 'postgres')")
    pg_conn.execute("CREATE TABLE remote (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO remote SELECT g, 'r' || g FROM generate_series(1, 1000) g")
    pg_conn.execute(
        "CREATE FOREIGN TABLE ft (id int4, v text) SERVER loop OPTIONS (table_name 'remote')"
    )
    mongo_db.ft.insert_one({"_id": "keep me"})
    for cmd in (copy_args(pg_dsn, "ft", mongo_uri, mongo_db.name, "--key", "id"),
                ["plan", "--source", pg_dsn, "--table", "ft", "--key", "id"]):  # fmt: skip
        run = run_cli(*cmd)
        assert run.rc == 3, run.stderr
        assert (
            "table public.ft is a foreign table: a foreign table is read outside the snapshot"
            in run.stderr
        )
        assert "pass --allow-foreign-table" in run.stderr
    assert list(mongo_db.ft.find()) == [{"_id": "keep me"}] and no_temp_collections(mongo_db)

    run = run_cli(*copy_args(pg_dsn, "ft", mongo_uri, mongo_db.name, "--key", "id", "--workers",
                             "2", "--allow-foreign-table", "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert "per-range consistency" in run.stderr
    assert mongo_db.ft.count_documents({}) == 1000 and mongo_db.ft.find_one({"_id": 7}) == {
        "_id": 7, "v": "r7"
    }  # fmt: skip
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["consistency"] == "per-range (foreign table)"
