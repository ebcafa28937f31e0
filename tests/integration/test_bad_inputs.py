"""Bad inputs: each fails before touching the target, with a clear message and its exit code.

The outcome table in docs/failures.md is this file's parameter list; keep them in step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.servers import (
    PASSWORD_ROLE,
    PASSWORD_ROLE_PASSWORD,
    PgServer,
    PostgresCluster,
    ServerError,
)

BAD_PASSWORD = "wr0ng-Pa55-zq"


def no_temp_collections(db: Database[Any]) -> bool:
    return not [n for n in db.list_collection_names() if "__psync_tmp_" in n]


def assert_clean_failure(
    run: Run, rc: int, msg: str, db: Database[Any], before: list[Any], *secrets: str
) -> None:
    assert run.rc == rc, f"rc {run.rc}, stderr:\n{run.stderr}"
    assert msg in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    for s in secrets:
        assert s not in run.stderr and s not in run.stdout
    assert list(db.src.find().sort("_id")) == before
    assert no_temp_collections(db)
    assert db.parallelsync_locks.count_documents({}) == 0, "the lease was not released"


# (case, exit code, message substring)
CASES = [
    ("missing_table", 3, "table 'no_such_table' does not exist"),
    ("missing_schema", 3, "schema 'nope' does not exist"),
    ("missing_key_column", 3, "names column(s) 'nokey' that table public.src does not have"),
    ("wrong_host_port", 3, "cannot connect to PostgreSQL"),
    ("wrong_password", 3, "password authentication failed"),
    ("unreachable_mongo", 4, "cannot reach MongoDB"),
    ("invalid_where", 2, "invalid --where"),
    ("zero_workers", 2, "--workers must be at least 1"),
    ("zero_max_attempts", 2, "--max-attempts must be at least 1"),
    ("unknown_option", 2, "unrecognized arguments: --frobnicate"),
    ("unsupported_config_key", 2, "unsupported config key(s): colour"),
    ("config_not_found", 2, "does not exist"),
    ("invalid_option_value", 2, "--nulls: 'maybe' is not one of null, omit"),
    ("invalid_integer_value", 2, "--workers: 'many' is not a valid int"),
    ("semicolon_in_table", 3, "does not exist"),
    ("quote_in_table", 3, "does not exist"),
    ("unterminated_quote_in_table", 2, "unterminated double quote"),
    ("invalid_slot_name", 2, "invalid slot name 'Bad-Slot'"),
    ("slot_in_use", 3, "replication slot 'busy_slot' already exists"),
    ("missing_target", 2, "--target is required"),
    ("missing_db", 2, "--db is required"),
    ("no_columns", 3, "has no columns to copy"),
    ("malformed_dsn", 2, "invalid PostgreSQL DSN"),
    (
        "no_select_privilege",
        3,
        "permission denied for table src: the role ps_pw cannot read public.src; "
        "GRANT SELECT ON public.src TO ps_pw",
    ),
]


@pytest.mark.parametrize(("case", "expect_rc", "expect_msg"), CASES, ids=[c[0] for c in CASES])
def test_bad_input(
    case: str,
    expect_rc: int,
    expect_msg: str,
    tmp_path: Path,
    pg_cluster: PgServer,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO src SELECT g, 'new' FROM generate_series(1, 50) g")
    mongo_db.src.insert_many([{"_id": i, "v": "old"} for i in range(10)])
    before = list(mongo_db.src.find().sort("_id"))
    source, table, target = pg_dsn, "src", mongo_uri
    extra: list[str] = ["--collection", "src", "--workers", "2"]
    secrets: list[str] = []
    dbname = pg_dsn.rsplit("/", 1)[1]
    if case == "missing_table":
        table = "no_such_table"
    elif case == "missing_schema":
        table = "nope.src"
    elif case == "missing_key_column":
        extra += ["--key", "nokey"]
    elif case == "wrong_host_port":
        source = "postgresql://nobody:topsecret@127.0.0.1:1/x"
        secrets.append("topsecret")
    elif case == "wrong_password":
        pg_conn.execute(f"GRANT SELECT ON src TO {PASSWORD_ROLE}")
        source = pg_cluster.dsn(dbname, user=PASSWORD_ROLE, password=BAD_PASSWORD)
        secrets.append(BAD_PASSWORD)
    elif case == "no_select_privilege":  # the role connects, but may not read the table
        source = pg_cluster.dsn(dbname, user=PASSWORD_ROLE, password=PASSWORD_ROLE_PASSWORD)
    elif case == "unreachable_mongo":
        target = "mongodb://someone:mongo-secret@127.0.0.1:1/?serverSelectionTimeoutMS=1000"
        secrets.append("mongo-secret")
    elif case == "invalid_where":
        extra += ["--where", "v = = 'x'"]
    elif case == "zero_workers":
        extra += ["--workers", "0"]
    elif case == "zero_max_attempts":
        extra += ["--max-attempts", "0"]
    elif case == "unknown_option":
        extra += ["--frobnicate"]
    elif case == "unsupported_config_key":
        cfg = tmp_path / "job.toml"
        cfg.write_text('workers = 2\ncolour = "blue"\n')
        extra += ["--config", str(cfg)]
    elif case == "config_not_found":
        extra += ["--config", str(tmp_path / "missing.toml")]
    elif case == "invalid_option_value":
        extra += ["--nulls", "maybe"]
    elif case == "invalid_integer_value":
        extra += ["--workers", "many"]
    elif case == "semicolon_in_table":
        table = "src; DROP TABLE src"
    elif case == "quote_in_table":
        table = 'src"; DROP TABLE src; --'  # taken literally as one (missing) name
    elif case == "unterminated_quote_in_table":
        table = '"src; DROP TABLE src'
    elif case == "invalid_slot_name":
        extra += ["--slot", "Bad-Slot"]
    elif case == "slot_in_use":
        pg_conn.execute("SELECT pg_create_logical_replication_slot('busy_slot', 'pgoutput')")
        extra += ["--slot", "busy_slot"]
    elif case == "missing_target":
        run = run_cli("copy", "--source", source, "--table", table, "--db", mongo_db.name, *extra)
        assert_clean_failure(run, expect_rc, expect_msg, mongo_db, before)
        return
    elif case == "missing_db":
        run = run_cli("copy", "--source", source, "--table", table, "--target", target, *extra)
        assert_clean_failure(run, expect_rc, expect_msg, mongo_db, before)
        return
    elif case == "no_columns":
        pg_conn.execute("CREATE TABLE nocols ()")
        table = "nocols"
    elif case == "malformed_dsn":
        source = "host=127.0.0.1 password=kv-secret port"
        secrets.append("kv-secret")
    run = run_cli(*copy_args(source, table, target, mongo_db.name, *extra))
    assert_clean_failure(run, expect_rc, expect_msg, mongo_db, before, *secrets)
    # The source table is intact (identifiers are never pasted into SQL).
    assert pg_conn.execute("SELECT count(*) FROM src").fetchone() == (50,)
    for job in mongo_db.parallelsync_jobs.find():
        assert job["status"] in ("FAILED", "ABORTED")
        for s in secrets:
            assert s not in str(job)
    if case == "slot_in_use":
        # The other consumer's slot is left alone.
        assert pg_conn.execute(
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name='busy_slot'"
        ).fetchone() == (1,)


def test_password_never_shown_on_success(
    pg_cluster: PgServer,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    """A good password reaches neither the output nor the job document."""
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO src SELECT g, 'x' FROM generate_series(1, 20) g")
    pg_conn.execute(f"GRANT SELECT ON src TO {PASSWORD_ROLE}")
    dbname = pg_dsn.rsplit("/", 1)[1]
    source = pg_cluster.dsn(dbname, user=PASSWORD_ROLE, password=PASSWORD_ROLE_PASSWORD)
    run = run_cli(
        *copy_args(source, "src", mongo_uri, mongo_db.name, "--workers", "2", "--json", "--debug")
    )
    assert run.rc == 0, run.stderr
    assert PASSWORD_ROLE_PASSWORD not in run.stderr + run.stdout
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["status"] == "FINISHED"
    assert PASSWORD_ROLE_PASSWORD not in str(job)
    assert PASSWORD_ROLE in job["source"]["dsn"]
    assert mongo_db.src.count_documents({}) == 20


@pytest.fixture(scope="module")
def replica_cluster(pg_cluster: PgServer) -> Any:
    """A second small cluster with wal_level=replica (ALTER SYSTEM overrides the test settings)."""
    if not isinstance(pg_cluster, PostgresCluster):
        pytest.skip(
            "PARALLELSYNC_TEST_PG_DSN is set: cannot start a second cluster with wal_level=replica"
        )
    cluster = PostgresCluster()
    try:
        cluster.start()
        cluster.execute("ALTER SYSTEM SET wal_level = replica")
        cluster.restart()
    except ServerError as e:
        cluster.cleanup()
        pytest.skip(f"cannot start a second PostgreSQL cluster: {e}")
    try:
        yield cluster
    finally:
        cluster.cleanup()


def test_slot_needs_logical_wal_level(
    replica_cluster: PostgresCluster, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    assert replica_cluster.execute("SHOW wal_level") == [("replica",)]
    replica_cluster.execute("CREATE TABLE IF NOT EXISTS src (id int4 PRIMARY KEY)")
    mongo_db.src.insert_many([{"_id": i, "v": "old"} for i in range(10)])
    before = list(mongo_db.src.find().sort("_id"))
    run = run_cli(
        *copy_args(replica_cluster.admin_dsn, "src", mongo_uri, mongo_db.name, "--slot", "s1")
    )
    assert_clean_failure(
        run,
        3,
        "--slot needs wal_level=logical on the source, but it is 'replica'",
        mongo_db,
        before,
    )
    # Without --slot the same source is fine (the empty table replaces the target as asked).
    run = run_cli(
        *copy_args(replica_cluster.admin_dsn, "src", mongo_uri, mongo_db.name, "--allow-empty")
    )
    assert run.rc == 0, run.stderr
    assert mongo_db.src.count_documents({}) == 0
