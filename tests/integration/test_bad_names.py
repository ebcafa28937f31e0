"""Database and collection names MongoDB would refuse fail at preflight, as usage errors naming
the rule (exit 2), before the snapshot, the slot, the lock or the job document exist; a quoted
table name with a dot goes to a collection of that whole name."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_reserved_collections import contents

SLOT = "psync_names_slot"

# (case, --db (None: the test's database), extra options, config file text, message substring)
CASES: list[tuple[str, str | None, list[str], str, str]] = [
    ("dot_in_db", "rel.names", [], "", "--db 'rel.names': MongoDB database names may not"),
    ("space_in_db", "my db", [], "", "may not contain space"),
    ("db_too_long", "d" * 64, [], "", "MongoDB database names must be shorter than 64 bytes"),
    ("dollar_in_collection", None, ["--collection", "x$y"], "", "may not contain '$'"),
    ("empty_collection", None, ["--collection", ""], "", "--collection is empty"),
    ("nul_in_collection", None, [], 'collection = "a\\u0000b"\n', "may not contain NUL"),
    ("system_collection", None, ["--collection", "system.x"], "", "'system.' belong to MongoDB"),
    ("collection_too_long", None, ["--collection", "c" * 250], "", "and MongoDB allows 255"),
    ("stats_dollar", None, ["--stats-collection", "jobs$"], "", "--stats-collection 'jobs$'"),
    (
        "changed_rows_too_long",
        None,
        ["--changed-rows-collection", "r" * 254],
        "",
        "--changed-rows-collection 'rrr",
    ),
]


@pytest.mark.parametrize(("case", "db", "extra", "file", "msg"), CASES, ids=[c[0] for c in CASES])
def test_bad_name_fails_before_anything_runs(
    case: str,
    db: str | None,
    extra: list[str],
    file: str,
    msg: str,
    tmp_path: Path,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute("CREATE TABLE orders (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO orders SELECT g, 'v' FROM generate_series(1, 20) g")
    mongo_db.orders.insert_one({"_id": 0, "v": "old"})
    before, databases = contents(mongo_db), sorted(mongo_client.list_database_names())
    if file:
        (tmp_path / "job.toml").write_text(file)
        extra = [*extra, "--config", str(tmp_path / "job.toml")]
    args = copy_args(pg_dsn, "orders", mongo_uri, db or mongo_db.name, "--slot", SLOT, *extra)
    run = run_cli(*args)
    assert run.rc == 2, f"rc {run.rc}, stderr:\n{run.stderr}"
    assert msg in run.stderr, run.stderr
    assert "internal error" not in run.stderr and "Traceback" not in run.stderr
    assert "status" not in run.stdout, "no job existed: no summary"
    # Nothing was created: no job document, lease or temp collection, no database, no slot.
    assert contents(mongo_db) == before
    assert sorted(mongo_client.list_database_names()) == databases
    slots = pg_conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
    assert (SLOT,) not in slots
    assert pg_conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (0,)


def test_status_and_verify_check_the_database_name(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str
) -> None:
    pg_conn.execute("CREATE TABLE orders (id int4 PRIMARY KEY)")
    status = run_cli("status", "--target", mongo_uri, "--db", "rel.names")
    verify = run_cli(
        "verify", "--source", pg_dsn, "--table", "orders", "--target", mongo_uri,
        "--db", "rel.names",
    )  # fmt: skip
    for run in (status, verify):
        assert run.rc == 2, f"rc {run.rc}, stderr:\n{run.stderr}"
        assert "--db 'rel.names': MongoDB database names may not contain ." in run.stderr
        assert "internal error" not in run.stderr


@pytest.mark.parametrize("table", ['"Order Lines.v2"', 'public."Order Lines.v2"'])
def test_quoted_dotted_table_goes_to_a_collection_of_its_whole_name(
    table: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute('CREATE TABLE "Order Lines.v2" (id int4 PRIMARY KEY, v text)')
    pg_conn.execute("""INSERT INTO "Order Lines.v2" SELECT g, 'x' FROM generate_series(1, 30) g""")
    run = run_cli(*copy_args(pg_dsn, table, mongo_uri, mongo_db.name, "--workers", "2"))
    assert run.rc == 0, run.stderr
    assert mongo_db["Order Lines.v2"].count_documents({}) == 30
    assert "v2" not in mongo_db.list_collection_names()
    job = mongo_db.parallelsync_jobs.find_one()
    assert job is not None and job["target"]["collection"] == "Order Lines.v2"
