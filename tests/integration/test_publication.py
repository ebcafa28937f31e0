"""`--slot` and the publication it needs: refused at preflight when it cannot work (nothing left
behind), `--publication NAME` for a role that does not own the table, and changed-row keys with
the documents' own types, from the copied table only."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.int64 import Int64
from pymongo.database import Database

from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.integration.test_copy import assert_collection_equals_table, no_temp_collections
from tests.integration.test_resume import (
    ROWS,
    change_everywhere,
    kill_when_held,
    make_table,
    start_copy,
)
from tests.servers import PgServer

HOOK = {"PARALLELSYNC_TEST_HOOKS": "before_workers=tests.hooks:run_sql"}


def left_behind(pg: psycopg.Connection[Any], db: Database[Any], slot: str) -> list[str]:
    """What a refused run must not have made: its slot, a publication, job documents, temps."""
    out = []
    if pg.execute("SELECT 1 FROM pg_replication_slots WHERE slot_name = %s", (slot,)).fetchone():
        out.append(f"slot {slot}")
    if pg.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (slot,)).fetchone():
        out.append(f"publication {slot}")
    if db.parallelsync_jobs.count_documents({}):
        out.append("job documents")
    if not no_temp_collections(db):
        out.append("temp collections")
    return out


@pytest.fixture
def replicator(pg_cluster: PgServer, pg_conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A DSN of a role with REPLICATION and SELECT on acc, which the superuser owns."""
    name = f"repl_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(f"CREATE ROLE {name} LOGIN REPLICATION")
    make_table(pg_conn)
    pg_conn.execute(f"GRANT SELECT ON acc TO {name}")
    try:
        yield pg_cluster.dsn(str(pg_conn.info.dbname), user=name)
    finally:
        pg_conn.execute(f"DROP OWNED BY {name}")
        pg_conn.execute(f"DROP ROLE {name}")


def copy(dsn: str, mongo_uri: str, db: Database[Any], *extra: str, **env: str) -> Run:
    return run_cli(*copy_args(dsn, "acc", mongo_uri, db.name, "--json", *extra), env=env)


def test_slot_as_a_role_that_does_not_own_the_table_fails_at_preflight(
    replicator: str, pg_conn: psycopg.Connection[Any], mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: no publication was made and nothing said so; the copy exited 0, and a later resume
    # or changed-rows collection was silently per-range / skipped.
    run = copy(replicator, mongo_uri, mongo_db, "--slot", "np_slot")
    assert run.rc == 3, run.stderr
    assert "lacks ownership of public.acc (owner: postgres)" in run.stderr, run.stderr
    assert "--publication <name>" in run.stderr and "CREATE PUBLICATION" in run.stderr
    assert "status FAILED" not in run.stderr
    assert left_behind(pg_conn, mongo_db, "np_slot") == []
    assert "acc" not in mongo_db.list_collection_names()


def test_slot_without_the_replication_attribute_fails_at_preflight(
    replicator: str, pg_conn: psycopg.Connection[Any], mongo_uri: str, mongo_db: Database[Any]
) -> None:
    role = psycopg.conninfo.conninfo_to_dict(replicator)["user"]
    pg_conn.execute(f"ALTER ROLE {role} NOREPLICATION")
    run = copy(replicator, mongo_uri, mongo_db, "--slot", "nr_slot")
    assert run.rc == 3, run.stderr
    assert f"needs the REPLICATION attribute: the role {role} lacks it" in run.stderr
    assert left_behind(pg_conn, mongo_db, "nr_slot") == []


def test_owner_created_publication_gives_changed_rows_and_an_exact_resume(
    replicator: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    pg_conn.execute("CREATE PUBLICATION owner_pub FOR TABLE acc")
    # Changed rows: rows changed after the snapshot, as the owner.
    env = HOOK | {
        "PSYNC_TEST_SQL": "UPDATE acc SET bal = 1 WHERE id IN (3, 7); DELETE FROM acc WHERE id = 9",
        "PSYNC_TEST_SQL_DSN": pg_dsn,
    }
    args = ("--slot", "pub_slot", "--publication", "owner_pub", "--collection", "acc_first")
    run = copy(
        replicator, mongo_uri, mongo_db, *args, "--changed-rows-collection", "refresh", **env
    )
    assert run.rc == 0, run.stderr
    assert run.json["changed_rows"] == 3
    assert sorted(d["key"]["id"] for d in mongo_db.refresh.find()) == [3, 7, 9]
    # The user's publication is used, never made nor dropped by parallelsync.
    assert pg_conn.execute("SELECT pubname FROM pg_publication ORDER BY pubname").fetchall() == [
        ("owner_pub",)
    ]
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["publication"] == "owner_pub"

    # An exact resume through it, after the coordinator was killed.
    hold = tmp_path / "held"
    proc = start_copy(
        replicator, mongo_uri, mongo_db.name, "--slot", "pub_slot2", "--publication",
        "owner_pub", hold=hold,
    )  # fmt: skip
    killed = kill_when_held(proc, mongo_db, hold)
    change_everywhere(pg_conn)
    resumed = copy(replicator, mongo_uri, mongo_db, "--workers", "2", "--resume", "last",
                   "--slot", "pub_slot2")  # fmt: skip
    assert resumed.rc == 0, resumed.stderr
    out = resumed.json
    assert out["job_id"] == killed["_id"] and out["consistency"] == "snapshot"
    assert "changes since the first snapshot will be applied from the slot" in resumed.stderr
    expected = ROWS - ROWS // 101 + 40 - 1  # change_everywhere, and id 9 deleted above
    assert assert_collection_equals_table(pg_conn, mongo_db, "acc", "acc") == expected
    job = mongo_db.parallelsync_jobs.find_one({"_id": killed["_id"]})
    assert job is not None and job["resume_changed_rows"] > 0
    assert pg_conn.execute("SELECT count(*) FROM pg_publication").fetchone() == (1,)


def test_a_failed_run_never_drops_a_users_publication(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # As the superuser, who could drop it: before, the cleanup of a failed run did.
    make_table(pg_conn)
    pg_conn.execute("CREATE PUBLICATION mine FOR TABLE acc")
    mongo_db.acc.insert_one({"_id": "keep me"})
    run = copy(pg_dsn, mongo_uri, mongo_db, "--slot", "fail_slot", "--publication", "mine",
               "--where", "false")  # fmt: skip
    assert run.rc == 2 and "--allow-empty" in run.stderr, run.stderr
    assert pg_conn.execute("SELECT pubname FROM pg_publication").fetchall() == [("mine",)]
    # ... while a publication parallelsync made for its slot is dropped with it.
    run = copy(pg_dsn, mongo_uri, mongo_db, "--slot", "own_slot", "--where", "false")
    assert run.rc == 2, run.stderr
    assert pg_conn.execute("SELECT pubname FROM pg_publication").fetchall() == [("mine",)]
    assert list(mongo_db.acc.find()) == [{"_id": "keep me"}]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("", "publication 'nopub' does not exist on the source"),
        ("CREATE TABLE other (id int PRIMARY KEY); CREATE PUBLICATION nopub FOR TABLE other",
         "publication 'nopub' does not publish public.acc"),
        ("CREATE PUBLICATION nopub FOR TABLE acc WITH (publish = 'insert, update')",
         "publication 'nopub' does not publish delete, truncate"),
        ("CREATE PUBLICATION nopub FOR TABLE acc WHERE (id > 10)",
         "publishes only the rows of public.acc matching WHERE (id > 10)"),
        ("CREATE PUBLICATION nopub FOR TABLE acc (bal)",
         "does not send column(s) id of public.acc"),
    ],
    ids=["missing", "other_table", "no_deletes", "row_filter", "column_list"],
)  # fmt: skip
def test_publication_that_cannot_serve_fails_at_preflight(
    replicator: str,
    pg_conn: psycopg.Connection[Any],
    mongo_uri: str,
    mongo_db: Database[Any],
    setup: str,
    message: str,
) -> None:
    for statement in filter(None, setup.split("; ")):
        pg_conn.execute(statement)
    run = copy(replicator, mongo_uri, mongo_db, "--slot", "bad_pub_slot", "--publication", "nopub")
    assert run.rc == 3, run.stderr
    assert message in run.stderr
    assert left_behind(pg_conn, mongo_db, "bad_pub_slot") == []


def test_existing_publication_named_like_the_slot_must_publish_the_table(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    # Before: reused without a look, so the slot decoded another table's changes.
    make_table(pg_conn)
    pg_conn.execute("CREATE TABLE other (id int PRIMARY KEY)")
    pg_conn.execute("CREATE PUBLICATION same_name FOR TABLE other")
    run = copy(pg_dsn, mongo_uri, mongo_db, "--slot", "same_name")
    assert run.rc == 3, run.stderr
    assert "publication 'same_name' does not publish public.acc" in run.stderr
    assert pg_conn.execute("SELECT 1 FROM pg_replication_slots").fetchone() is None
    assert pg_conn.execute("SELECT pubname FROM pg_publication").fetchall() == [("same_name",)]


def test_table_without_primary_key_refuses_features_that_need_a_publication(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE nopk (id int NOT NULL UNIQUE, v text)")
    pg_conn.execute("INSERT INTO nopk SELECT g, 'v' FROM generate_series(1, 50) g")
    base = copy_args(pg_dsn, "nopk", mongo_uri, mongo_db.name, "--key", "id", "--slot", "nopk_s")
    # Before: exit 0 and "needs --slot on a table with a primary key; skipped" after the swap.
    run = run_cli(*base, "--changed-rows-collection", "refresh")
    assert run.rc == 2, run.stderr
    assert "--changed-rows-collection need(s) the changes of public.nopk" in run.stderr
    assert "public.nopk has no primary key" in run.stderr
    assert left_behind(pg_conn, mongo_db, "nopk_s") == [] and "nopk" not in (
        mongo_db.list_collection_names()
    )
    run = run_cli(*base, "--require-snapshot-consistency")
    assert run.rc == 2 and "--require-snapshot-consistency need(s)" in run.stderr, run.stderr
    # The slot alone still works, and says what it cannot do.
    run = run_cli(*base, "--json")
    assert run.rc == 0, run.stderr
    assert "no publication is made: a --resume of this job gives per-range consistency" in (
        run.stderr
    )
    assert mongo_db.nopk.count_documents({}) == 50


def test_changed_rows_collection_without_slot_or_mongodb_target_is_refused(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    make_table(pg_conn)
    run = copy(pg_dsn, mongo_uri, mongo_db, "--changed-rows-collection", "refresh")
    assert run.rc == 2 and "pass --slot NAME too" in run.stderr, run.stderr
    run = copy(pg_dsn, mongo_uri, mongo_db, "--publication", "p")
    assert run.rc == 2 and "--publication p names the publication a --slot" in run.stderr
    run = run_cli(
        "copy", "--source", pg_dsn, "--table", "acc", "--target", f"file:{tmp_path}",
        "--slot", "file_slot", "--changed-rows-collection", "refresh",
    )  # fmt: skip
    assert run.rc == 2 and "a file: target cannot hold" in run.stderr, run.stderr
    assert left_behind(pg_conn, mongo_db, "file_slot") == [] and not list(tmp_path.iterdir())


# ------------------------------------------------------------ changed rows: the documents' types
KEY_TABLES = {
    "int4": ("id int4 PRIMARY KEY", "g", "id = 3 OR id = 8"),
    "int8": ("id int8 PRIMARY KEY", "g + 5000000000", "id = 5000000003"),
    "text": ("id text PRIMARY KEY", "'k' || g", "id = 'k3' OR id = 'k10'"),
    "uuid": ("id uuid PRIMARY KEY", "md5(g::text)::uuid", "id = md5('4')::uuid"),
    "composite": (
        "region text, n int8, PRIMARY KEY (region, n)", "'r' || (g % 3), g", "n IN (2, 6)"
    ),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(KEY_TABLES))
def test_changed_rows_keys_have_the_documents_types(
    kind: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    columns, values, changed = KEY_TABLES[kind]
    names = "region, n" if kind == "composite" else "id"
    pg_conn.execute(f"CREATE TABLE kt ({columns}, v text)")
    pg_conn.execute(f"INSERT INTO kt SELECT {values}, 'v' FROM generate_series(1, 20) g")
    # A second table in the same publication, changed in the same transaction: not kt's rows.
    pg_conn.execute("CREATE TABLE side (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO side SELECT g, 'v' FROM generate_series(1, 20) g")
    pg_conn.execute("CREATE PUBLICATION both_tables FOR TABLE kt, side")
    env = HOOK | {
        "PSYNC_TEST_SQL": f"UPDATE kt SET v = 'late' WHERE {changed}; UPDATE side SET v = 'x'"
    }
    run = run_cli(
        *copy_args(pg_dsn, "kt", mongo_uri, mongo_db.name, "--slot", "kt_slot", "--publication",
                   "both_tables", "--changed-rows-collection", "refresh", "--json"),
        env=env,
    )  # fmt: skip
    assert run.rc == 0, run.stderr
    opts: CodecOptions[dict[str, Any]] = CodecOptions(
        uuid_representation=UuidRepresentation.STANDARD
    )
    late = {
        repr(d["_id"]): d["_id"]
        for d in mongo_db.get_collection("kt", codec_options=opts).find({"v": "late"})
    }
    assert late == {}, "the copy saw rows changed after its snapshot"
    changed_ids = pg_conn.execute(
        f"SELECT {names} FROM kt WHERE v = 'late' ORDER BY {names}"
    ).fetchall()
    keys = [d["key"] for d in mongo_db.get_collection("refresh", codec_options=opts).find()]
    assert run.json["changed_rows"] == len(keys) == len(changed_ids) > 0  # no row of side
    target = mongo_db.get_collection("kt", codec_options=opts)
    for key in keys:
        doc_id = key if kind == "composite" else key["id"]
        doc = target.find_one({"_id": doc_id})
        assert doc is not None, key
        assert list(key) == names.split(", ")
        # The same BSON types as the document's _id parts (pymongo decodes int64 as Int64).
        parts = doc["_id"] if kind == "composite" else {"id": doc["_id"]}
        assert [(type(v), v) for v in key.values()] == [(type(v), v) for v in parts.values()]
    expected = {"int4": int, "int8": Int64, "text": str, "uuid": uuid.UUID}
    for part in keys[0].values():
        if kind != "composite":
            assert type(part) is expected[kind]
    if kind == "composite":
        assert [type(v) for v in keys[0].values()] == [str, Int64]
