"""A copy that says FINISHED holds every row (issue 10, source side): keys that are not NOT NULL
and unique, the final count against the snapshot itself, key types whose operators are not on the
search path, and `_id` built from a column other than the range key."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.integration.test_copy import no_temp_collections

HOOKS = "PARALLELSYNC_TEST_HOOKS"


def target_for(kind: str, mongo_uri: str, tmp_path: Path) -> str:
    return {"mongodb": mongo_uri, "file": f"file:{tmp_path}", "null": "null:"}[kind]


def copy_to(
    kind: str, pg_dsn: str, table: str, mongo_uri: str, db: str, tmp: Path, *extra: str
) -> Run:
    return run_cli(
        *copy_args(pg_dsn, table, target_for(kind, mongo_uri, tmp), db, "--json", *extra)
    )


def assert_untouched(run: Run, rc: int, msg: str, db: Database[Any], tmp: Path) -> None:
    assert run.rc == rc, f"rc {run.rc}, stderr:\n{run.stderr}"
    assert msg in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert list(db.codes.find()) == [{"_id": "keep me"}]
    assert no_temp_collections(db)
    assert not [p for p in tmp.iterdir() if p.name != "codes.bson"], list(tmp.iterdir())
    assert (tmp / "codes.bson").read_bytes() == b"old"


@pytest.fixture
def keep(mongo_db: Database[Any], tmp_path: Path) -> Path:
    """An existing target in MongoDB and in the file target's directory, which must survive."""
    mongo_db.codes.insert_one({"_id": "keep me"})
    (tmp_path / "codes.bson").write_bytes(b"old")
    return tmp_path


# ------------------------------------------------------------------ keys the catalog disproves
def test_a_key_that_allows_null_is_refused(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    keep: Path,
) -> None:  # fmt: skip
    # Before: 2,000 rows, exit 0 with 1,980 documents (rows with a NULL code are in no range).
    pg_conn.execute("CREATE TABLE codes (id int4 PRIMARY KEY, code int4 UNIQUE, v text)")
    pg_conn.execute(
        "INSERT INTO codes SELECT g, CASE WHEN g % 100 = 0 THEN NULL ELSE g END, 'v' || g "
        "FROM generate_series(1, 2000) g"
    )
    for kind in ("mongodb", "file", "null"):
        run = copy_to(kind, pg_dsn, "codes", mongo_uri, mongo_db.name, keep, "--key", "code")
        assert_untouched(
            run, 3, "--key code: column 'code' of table public.codes allows NULL", mongo_db, keep
        )
        assert "rows with a NULL key would be missed" in run.stderr


@pytest.mark.parametrize("kind", ["mongodb", "file", "null"])
def test_a_key_without_a_unique_index_is_refused_for_every_target(
    kind: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any], keep: Path,
) -> None:  # fmt: skip
    # Before: exit 0 for file: and null: (1,999 documents, 4 distinct _ids); exit 7 for MongoDB.
    pg_conn.execute("CREATE TABLE codes (id int4 PRIMARY KEY, grp int4 NOT NULL, v text)")
    pg_conn.execute("INSERT INTO codes SELECT g, g % 4, 'v' FROM generate_series(1, 1999) g")
    run = copy_to(kind, pg_dsn, "codes", mongo_uri, mongo_db.name, keep, "--key", "grp")
    assert_untouched(
        run, 3, "--key grp: no unique index or constraint of table public.codes covers (grp)",
        mongo_db, keep,
    )  # fmt: skip


def test_a_composite_key_covered_by_a_narrower_unique_index_is_accepted(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(
        "CREATE TABLE pairs (id int4 PRIMARY KEY, a int4 NOT NULL UNIQUE, b text NOT NULL)"
    )
    pg_conn.execute("INSERT INTO pairs SELECT g, g, 'b' || g FROM generate_series(1, 900) g")
    pg_conn.execute("CREATE UNIQUE INDEX pairs_partial ON pairs (b) WHERE id > 5")  # no proof
    run = run_cli(*copy_args(pg_dsn, "pairs", mongo_uri, mongo_db.name, "--key", "b,a",
                             "--workers", "2", "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert mongo_db.pairs.count_documents({}) == 900
    assert mongo_db.pairs.find_one({"_id": {"b": "b7", "a": 7}}) is not None
    bad = run_cli(*copy_args(pg_dsn, "pairs", mongo_uri, mongo_db.name, "--key", "b"))
    assert bad.rc == 3 and "no unique index or constraint" in bad.stderr, bad.stderr


# -------------------------------------------------------- keys the catalog cannot prove (views)
def test_null_keys_of_a_view_are_copied_by_a_range_of_their_own(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: exit 0 without the row whose key is NULL (no range selected it).
    pg_conn.execute("CREATE TABLE base (id int4 PRIMARY KEY, code int4 UNIQUE, v text)")
    pg_conn.execute(
        "INSERT INTO base SELECT g, CASE WHEN g = 777 THEN NULL ELSE g END, 'v' || g "
        "FROM generate_series(1, 3000) g"
    )
    pg_conn.execute("CREATE VIEW codes AS SELECT code, v FROM base")
    run = run_cli(*copy_args(pg_dsn, "codes", mongo_uri, mongo_db.name, "--key", "code",
                             "--workers", "2", "--verify", "checksum", "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert run.json["rows"] == run.json["docs"] == 3000
    assert mongo_db.codes.count_documents({}) == 3000
    assert mongo_db.codes.find_one({"_id": None}) == {"_id": None, "v": "v777"}
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None
    nulls = [r for r in job["ranges"] if r["kind"] == "nulls"]
    assert len(nulls) == 1 and nulls[0]["rows"] == 1 and '"code" IS NULL' in nulls[0]["query"]
    assert job["verify"]["per_range"] is True and job["verify"]["differing_ranges"] == []


@pytest.mark.parametrize("kind", ["mongodb", "file", "null"])
def test_duplicate_keys_of_a_view_fail_for_every_target(
    kind: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any], keep: Path,
) -> None:  # fmt: skip
    # Before: exit 0 for file: and null: with documents sharing an _id.
    pg_conn.execute("CREATE TABLE base (id int4 PRIMARY KEY, grp int4, v text)")
    pg_conn.execute("INSERT INTO base SELECT g, g % 500, 'v' FROM generate_series(1, 1999) g")
    pg_conn.execute("CREATE VIEW codes AS SELECT grp, v FROM base")
    run = copy_to(kind, pg_dsn, "codes", mongo_uri, mongo_db.name, keep, "--key", "grp",
                  "--workers", "2")  # fmt: skip
    assert_untouched(run, 7, "the chosen key is not unique", mongo_db, keep)
    assert run.json["status"] == "FAILED"


# ------------------------------------------------------------- the count against the snapshot
@pytest.mark.parametrize("kind", ["mongodb", "null"])
def test_rows_no_range_read_fail_the_count_against_the_snapshot(
    kind: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any], keep: Path,
) -> None:  # fmt: skip
    # A test hook makes one range read nothing: rows read and documents agree (the old check
    # passed, exit 0); the snapshot holds more.
    pg_conn.execute("CREATE TABLE codes (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO codes SELECT g, 'v' FROM generate_series(1, 3000) g")
    pg_conn.execute("ANALYZE codes")
    run = run_cli(
        *copy_args(pg_dsn, "codes", target_for(kind, mongo_uri, keep), mongo_db.name,
                   "--workers", "2", "--json"),
        env={HOOKS: "before_workers=tests.hooks:skip_first_range"},
    )  # fmt: skip
    assert_untouched(run, 6, "rows but the snapshot holds 3000", mongo_db, keep)
    assert "the workers read " in run.stderr


# --------------------------------------------- key types whose operators are not on the path
def test_citext_key_outside_the_search_path_is_split_with_its_own_operators(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: the sample was ordered by citext, the predicates compared as text: ranges overlap,
    # exit 7 ("the chosen key is not unique") on a unique key.
    pg_conn.execute("CREATE SCHEMA ext")
    pg_conn.execute("CREATE EXTENSION citext SCHEMA ext")
    pg_conn.execute("CREATE TABLE words (k ext.citext PRIMARY KEY, n int4)")
    pg_conn.execute(
        "INSERT INTO words SELECT CASE WHEN g % 2 = 0 THEN upper(s) ELSE s END, g "
        "FROM (SELECT g, chr(97 + g % 26) || lpad(g::text, 5, '0') AS s "
        "FROM generate_series(1, 2600) g) x"
    )
    pg_conn.execute("CREATE TABLE pairs (k ext.citext, n int4, PRIMARY KEY (k, n))")
    pg_conn.execute("INSERT INTO pairs SELECT k, n % 3 FROM words")
    for table, ranges in (("words", 8), ("pairs", 8)):
        run = run_cli(*copy_args(pg_dsn, table, mongo_uri, mongo_db.name, "--workers", "2",
                                 "--json"))  # fmt: skip
        assert run.rc == 0, run.stderr
        assert run.json["ranges"] == ranges and run.json["docs"] == 2600
        assert mongo_db[table].count_documents({}) == 2600
        job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
        assert job is not None
        queries = " ".join(r["query"] for r in job["ranges"])
        assert 'OPERATOR("ext".>=)' in queries and 'AS "ext"."citext")' in queries
        # the composite key could not use a row comparison (its >= resolves to text's by name)
        assert ("ROW(" in queries) is False
    ids = {d["_id"] for d in mongo_db.words.find({}, {"_id": 1})}
    assert len(ids) == 2600 and "A00026" in ids and "b00001" in ids


# ------------------------------------------------------ [mapping] id on another column than the key
MAPPED_ROWS = 30_000


def mapped_table(conn: psycopg.Connection[Any]) -> None:
    """`code` runs against `id`: range bounds on id, used as bounds on _id = code, select the
    documents of the mirrored ranges."""
    conn.execute("CREATE TABLE acc (id int4 PRIMARY KEY, code int4 NOT NULL UNIQUE, v text)")
    conn.execute(
        f"INSERT INTO acc SELECT g, {MAPPED_ROWS + 1} - g, 'v' || g "
        f"FROM generate_series(1, {MAPPED_ROWS}) g"
    )
    conn.execute("ANALYZE acc")


def mapping_file(tmp_path: Path) -> str:
    path = tmp_path / "map.toml"
    path.write_text('[mapping]\nid = ["code"]\n')
    return str(path)


def test_id_from_another_column_passes_copy_verify_checksum(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    # Before: exit 6 every time ("checksum verification failed for ranges [...]", identical
    # totals): the per-range _id filters came from the range key's bounds.
    pg_conn.execute("CREATE TABLE acc (id int4 PRIMARY KEY, code int4 NOT NULL UNIQUE, v text)")
    pg_conn.execute("INSERT INTO acc SELECT g, 3001 - g, 'v' || g FROM generate_series(1, 3000) g")
    pg_conn.execute("ANALYZE acc")
    run = run_cli(*copy_args(pg_dsn, "acc", mongo_uri, mongo_db.name, "--workers", "2",
                             "--verify", "checksum", "--config", mapping_file(tmp_path),
                             "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert mongo_db.acc.count_documents({}) == 3000
    assert mongo_db.acc.find_one({"_id": 3000}) == {"_id": 3000, "id": 1, "v": "v1"}
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["verify"]["per_range"] is False
    assert all(r["id_filter"] is None for r in job["ranges"])


def test_resume_without_slot_keeps_finished_ranges_when_id_is_another_column(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    # Before: the resume cleared each unfinished range by its id bounds applied to _id = code,
    # deleting the mirrored (finished) ranges' documents: fewer documents, exit 6.
    mapped_table(pg_conn)
    cfg = mapping_file(tmp_path)
    args = ["--workers", "2", "--ranges-per-worker", "8", "--config", cfg]
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync",
         *copy_args(pg_dsn, "acc", mongo_uri, mongo_db.name, "--batch-rows", "50", *args)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,  # its own process group: SIGKILL reaches the workers too
    )  # fmt: skip
    try:
        killed = kill_with_ranges_done(proc, mongo_db, done=3)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finished = [r for r in killed["ranges"] if r["status"] == "DONE"]
    run = run_cli(*copy_args(pg_dsn, "acc", mongo_uri, mongo_db.name, *args, "--resume",
                             killed["_id"], "--json"))  # fmt: skip
    assert run.rc == 0, run.stderr
    assert run.json["rows"] == MAPPED_ROWS
    assert mongo_db.acc.count_documents({}) == MAPPED_ROWS
    for r in finished:  # every finished range's documents are still there, once
        lo = 1 if r["lower"] is None else r["lower"][0]
        hi = MAPPED_ROWS + 1 if r["upper"] is None else r["upper"][0]
        codes = {MAPPED_ROWS + 1 - i for i in range(lo, hi)}
        assert mongo_db.acc.count_documents({"_id": {"$in": sorted(codes)}}) == len(codes)
    assert no_temp_collections(mongo_db)


def kill_with_ranges_done(
    proc: subprocess.Popen[str], db: Database[Any], done: int
) -> dict[str, Any]:
    """SIGKILL the job once its document shows `done` finished ranges and some unfinished."""
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        job = db.parallelsync_jobs.find_one({}, sort=[("started_at", -1)])
        if job:
            states = [r["status"] for r in job.get("ranges", [])]
            if states.count("DONE") >= done:
                assert states.count("DONE") < len(states), "the copy finished before the kill"
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                return job
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.1)
    pytest.fail("the copy never finished enough ranges")
