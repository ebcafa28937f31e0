"""TRUNCATE and table rewrites around the snapshot (issue 10 item 2): committed between the
snapshot export and the first COPY they fail the job (the snapshot would see an empty table);
issued during the copy they wait for it (the guard's ACCESS SHARE lock)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.hooks import HOOK_OUT_ENV
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_copy import no_temp_collections

HOOKS = "PARALLELSYNC_TEST_HOOKS"
ROWS = 2_000


def make_table(conn: psycopg.Connection[Any], name: str = "tt") -> None:
    conn.execute(f"CREATE TABLE {name} (id int4 PRIMARY KEY, v int4)")
    conn.execute(f"INSERT INTO {name} SELECT g, g FROM generate_series(1, {ROWS}) g")
    conn.execute(f"ANALYZE {name}")


@pytest.mark.parametrize(
    ("hook", "slot"),
    [("truncate_table", None), ("rewrite_table", None), ("truncate_table", "guard_slot")],
    ids=["truncate", "alter-type", "truncate-with-slot"],
)
def test_truncate_or_rewrite_after_the_snapshot_fails_the_job(
    hook: str, slot: str | None, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    # Before: 3/3 runs ended exit 0 FINISHED with 0 documents, the target replaced.
    make_table(pg_conn)
    mongo_db.tt.insert_one({"_id": "keep me"})
    extra = ["--slot", slot] if slot else []
    run = run_cli(
        *copy_args(pg_dsn, "tt", mongo_uri, mongo_db.name, "--workers", "2", "--json", *extra),
        env={HOOKS: f"after_snapshot=tests.hooks:{hook}"},
    )
    assert run.rc == 3, run.stderr
    assert (
        "table public.tt was truncated or rewritten after the snapshot was taken" in run.stderr
    ), run.stderr
    assert "its rows are not in the snapshot; run the copy again" in run.stderr
    assert run.json["status"] == "FAILED"
    assert list(mongo_db.tt.find()) == [{"_id": "keep me"}]
    assert no_temp_collections(mongo_db)
    assert mongo_db.parallelsync_locks.count_documents({}) == 0
    slots = pg_conn.execute(
        "SELECT slot_name FROM pg_replication_slots WHERE database = current_database()"
    ).fetchall()
    assert slots == [], "the failed run's slot was not dropped"


def test_truncate_of_a_partition_after_the_snapshot_fails_the_job(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
) -> None:  # fmt: skip
    pg_conn.execute("CREATE TABLE pt (id int4, v int4, PRIMARY KEY (id)) PARTITION BY RANGE (id)")
    pg_conn.execute("CREATE TABLE pt_1 PARTITION OF pt FOR VALUES FROM (0) TO (1000)")
    pg_conn.execute("CREATE TABLE pt_2 PARTITION OF pt FOR VALUES FROM (1000) TO (9999)")
    pg_conn.execute("INSERT INTO pt SELECT g, g FROM generate_series(1, 2000) g")
    run = run_cli(
        *copy_args(pg_dsn, "pt", mongo_uri, mongo_db.name),
        env={HOOKS: "after_snapshot=tests.hooks:truncate_table"},  # TRUNCATE pt: every partition
    )
    assert run.rc == 3, run.stderr
    assert "table public.pt_1 was truncated or rewritten" in run.stderr, run.stderr
    assert "pt" not in mongo_db.list_collection_names() and no_temp_collections(mongo_db)


def test_truncate_under_a_view_or_a_refresh_after_the_snapshot_fails_the_job(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
) -> None:  # fmt: skip
    make_table(pg_conn, "base")
    pg_conn.execute("CREATE VIEW vw AS SELECT id, v FROM base")
    run = run_cli(
        *copy_args(pg_dsn, "vw", mongo_uri, mongo_db.name, "--key", "id"),
        env={HOOKS: "after_snapshot=tests.hooks:truncate_base"},
    )
    assert run.rc == 3, run.stderr
    assert "table public.base was truncated or rewritten" in run.stderr, run.stderr
    pg_conn.execute("INSERT INTO base SELECT g, g FROM generate_series(1, 10) g")
    pg_conn.execute("CREATE MATERIALIZED VIEW mv AS SELECT id, v FROM base")
    pg_conn.execute("CREATE UNIQUE INDEX ON mv (id)")
    run = run_cli(
        *copy_args(pg_dsn, "mv", mongo_uri, mongo_db.name, "--key", "id"),
        env={HOOKS: "after_snapshot=tests.hooks:refresh_mv"},
    )
    assert run.rc == 3, run.stderr
    assert "table public.mv was truncated or rewritten" in run.stderr, run.stderr
    assert not {"vw", "mv"} & set(mongo_db.list_collection_names())
    assert no_temp_collections(mongo_db)


def test_truncate_during_the_copy_waits_for_it(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    # Before: nothing held the table between the snapshot and the workers' first COPY, so the
    # TRUNCATE went through and the copy ended FINISHED with 0 documents.
    make_table(pg_conn)
    out = tmp_path / "hook.out"
    run = run_cli(
        *copy_args(pg_dsn, "tt", mongo_uri, mongo_db.name, "--workers", "2", "--json"),
        env={HOOKS: "before_workers=tests.hooks:try_truncate", HOOK_OUT_ENV: str(out)},
    )
    assert out.read_text() == "blocked"
    assert run.rc == 0, run.stderr
    assert run.json["docs"] == ROWS and mongo_db.tt.count_documents({}) == ROWS
    assert pg_conn.execute("SELECT count(*) FROM tt").fetchone() == (ROWS,)
    # The job is over: nothing holds the table any more.
    pg_conn.execute("SET lock_timeout = '5s'")
    pg_conn.execute("TRUNCATE tt")
