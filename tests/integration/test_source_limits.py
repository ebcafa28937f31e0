"""What the source allows: `--where` never runs statements (issue 10 item 19), and `--workers`
never takes more connections than the source has free (item 17)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.errors import SourceError
from parallelsync.source.connect import connect
from parallelsync.source.copystream import copy_batches
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_copy import no_temp_collections
from tests.servers import PgServer

INJECTION = "true); DROP TABLE victim; SELECT (1"


def victim(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    conn.execute("INSERT INTO src SELECT g, 'v' FROM generate_series(1, 300) g")
    conn.execute("CREATE TABLE victim (x int4)")
    conn.execute("INSERT INTO victim VALUES (1), (2), (3)")


def victim_rows(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT count(*) FROM victim").fetchone()
    return int(row[0]) if row else -1


@pytest.mark.parametrize("command", ["copy", "plan", "verify"])
def test_where_with_statements_runs_none_of_them(
    command: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    # Before: the preflight's EXPLAIN ran on an autocommit connection with the simple query
    # protocol, so the DROP ran (then exit 3).
    victim(pg_conn)
    mongo_db.src.insert_one({"_id": "keep me"})
    args = ["--source", pg_dsn, "--table", "src", "--where", INJECTION]
    if command != "plan":
        args += ["--target", mongo_uri, "--db", mongo_db.name]
    run = run_cli(command, *args)
    assert run.rc == 2, run.stderr
    assert "invalid --where" in run.stderr
    assert "cannot insert multiple commands into a prepared statement" in run.stderr
    assert victim_rows(pg_conn) == 3
    assert list(mongo_db.src.find()) == [{"_id": "keep me"}] and no_temp_collections(mongo_db)


def test_where_runs_only_in_read_only_transactions(
    pg_conn: psycopg.Connection[Any], pg_dsn: str
) -> None:
    # Before: `plan` sampled on an autocommit connection: nextval() ran, the sequence moved.
    victim(pg_conn)
    pg_conn.execute("CREATE SEQUENCE s")
    run = run_cli("plan", "--source", pg_dsn, "--table", "src", "--where", "nextval('s') > 0")
    assert run.rc == 3, run.stderr
    assert "cannot execute nextval() in a read-only transaction" in run.stderr
    assert pg_conn.execute("SELECT last_value, is_called FROM s").fetchone() == (1, False)


def test_copy_statement_is_one_statement(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    # Before: the COPY went out with the simple query protocol, which ran the DROP after it.
    victim(pg_conn)
    conn = connect(pg_dsn, autocommit=True)
    try:
        q = "COPY (SELECT 1) TO STDOUT (FORMAT BINARY); DROP TABLE victim"
        with pytest.raises(SourceError, match="cannot insert multiple commands"):
            list(copy_batches(conn, q, pg_dsn, 10, 1 << 20))
    finally:
        conn.close()
    assert victim_rows(pg_conn) == 3


# ---------------------------------------------------------------------- connection slots
def test_workers_beyond_the_free_connections_are_capped(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: 500 workers were started (one range each at most) until the server refused.
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO src SELECT g, 'v' FROM generate_series(1, 50) g")
    run = run_cli(*copy_args(pg_dsn, "src", mongo_uri, mongo_db.name, "--workers", "500",
                             "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    m = re.search(r"--workers 500 capped to (\d+): the source accepts (\d+) more connections "
                  r"\(max_connections 200, 3 reserved, \d+ in use\)", run.stderr)  # fmt: skip
    assert m, run.stderr
    capped, free = int(m[1]), int(m[2])
    assert 1 < capped < 200 and capped == free - 3
    assert run.json["workers"] == capped and mongo_db.src.count_documents({}) == 50
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["workers"] == capped
    plan = run_cli("plan", "--source", pg_dsn, "--table", "src", "--workers", "500")
    assert plan.rc == 0 and f"--workers 500 capped to {capped}" in plan.stderr, plan.stderr


@pytest.fixture
def limited_role(pg_cluster: PgServer, pg_conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A login role (trusted over TCP in the test cluster) that may read `src`."""
    name = f"lim_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(f"CREATE ROLE {name} LOGIN CONNECTION LIMIT 5")
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 4000) g")
    pg_conn.execute("ANALYZE src")
    pg_conn.execute(f"GRANT SELECT ON src TO {name}")
    try:
        yield name
    finally:
        pg_conn.execute(f"DROP OWNED BY {name}")
        pg_conn.execute(f"DROP ROLE {name}")


def test_workers_are_capped_by_the_roles_connection_limit(
    limited_role: str, pg_cluster: PgServer, pg_conn: psycopg.Connection[Any], mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    # Before: the workers' connections beyond the limit failed ("too many connections for role"),
    # and with them the job.
    dsn = pg_cluster.dsn(str(pg_conn.info.dbname), user=limited_role)
    run = run_cli(*copy_args(dsn, "src", mongo_uri, mongo_db.name, "--workers", "500", "--json"))
    assert run.rc == 0, run.stderr
    assert "--workers 500 capped to 2: the source accepts 5 more connections (the role's " \
        "connection limit 5, 1 in use)" in run.stderr  # fmt: skip
    assert run.json["workers"] == 2 and run.json["ranges"] == 8
    assert mongo_db.src.count_documents({}) == 4000

    pg_conn.execute(f"ALTER ROLE {limited_role} CONNECTION LIMIT 3")
    mongo_db.src.drop()
    mongo_db.src.insert_one({"_id": "keep me"})
    run = run_cli(*copy_args(dsn, "src", mongo_uri, mongo_db.name, "--workers", "2"))
    assert run.rc == 3, run.stderr
    assert "the source accepts only 3 more connection(s) (the role's connection limit 3" in (
        run.stderr
    )
    assert "not one worker fits" in run.stderr
    assert list(mongo_db.src.find()) == [{"_id": "keep me"}] and no_temp_collections(mongo_db)
