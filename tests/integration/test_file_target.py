"""`--target file:DIR`: a mongorestore-compatible .bson file, swapped into place atomically."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import bson
import psycopg
import pytest
from bson import json_util
from bson.codec_options import CodecOptions
from bson.json_util import CANONICAL_JSON_OPTIONS
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from parallelsync.targets import metadata
from tests.integration.cli_helpers import run_cli

OPTS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)
FILES = ["items.bson", "items.metadata.json"]


def file_args(pg_dsn: str, directory: Path, *extra: str) -> list[str]:
    return ["copy", "--source", pg_dsn, "--table", "items", "--target", f"file:{directory}", *extra]


def test_file_target_writes_every_row_and_replaces_the_file_atomically(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, name text, at timestamptz)")
    pg_conn.execute(
        "INSERT INTO items SELECT g, 'item ' || g, '2024-01-01'::timestamptz + g * interval '1 h' "
        "FROM generate_series(1, 3000) g"
    )
    pg_conn.execute("ANALYZE items")
    run = run_cli(*file_args(pg_dsn, tmp_path, "--workers", "3", "--batch-rows", "100", "--json"))
    assert run.rc == 0, run.stderr
    assert run.json["rows"] == 3000 and run.json["status"] == "FINISHED"
    assert run.json["target"] == str(tmp_path / "items.bson")
    docs = bson.decode_all((tmp_path / "items.bson").read_bytes(), OPTS)
    assert sorted(d["_id"] for d in docs) == list(range(1, 3001))
    by_id = {d["_id"]: d for d in docs}
    assert by_id[7]["name"] == "item 7"
    assert by_id[7]["at"].isoformat() == "2024-01-01T07:00:00+00:00"
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES  # no parts left behind

    # A failing run (an infinite timestamp under --infinity error) leaves the files as they were.
    before = (tmp_path / "items.bson").read_bytes()
    meta_before = (tmp_path / "items.metadata.json").read_bytes()
    pg_conn.execute("UPDATE items SET at = 'infinity' WHERE id = 2500")
    bad = run_cli(*file_args(pg_dsn, tmp_path, "--workers", "2", "--infinity", "error"))
    assert bad.rc == 7, bad.stderr
    assert "_id 2500" in bad.stderr
    assert (tmp_path / "items.bson").read_bytes() == before
    assert (tmp_path / "items.metadata.json").read_bytes() == meta_before
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES


def test_file_target_directory_is_created_when_its_parent_exists(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY)")
    pg_conn.execute("INSERT INTO items SELECT generate_series(1, 10)")
    run = run_cli(*file_args(pg_dsn, tmp_path / "missing" / "deeper"))
    assert run.rc == 2, run.stderr
    assert f"{tmp_path / 'missing'} does not exist" in run.stderr
    assert not (tmp_path / "missing").exists()
    made = run_cli(*file_args(pg_dsn, tmp_path / "new", "--json"))
    assert made.rc == 0, made.stderr
    assert made.json["rows"] == 10
    assert len(bson.decode_all((tmp_path / "new" / "items.bson").read_bytes(), OPTS)) == 10
    (tmp_path / "plain").write_text("x")
    not_dir = run_cli(*file_args(pg_dsn, tmp_path / "plain"))
    assert not_dir.rc == 2 and f"{tmp_path / 'plain'} is not a directory" in not_dir.stderr


def test_one_run_per_target_file_and_no_stale_lock_after_a_crash(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, name text)")
    pg_conn.execute("INSERT INTO items SELECT g, 'n' || g FROM generate_series(1, 4000) g")
    pg_conn.execute("ANALYZE items")
    out = tmp_path / "out"
    out.mkdir()
    held = tmp_path / "held"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    env |= {
        "PARALLELSYNC_TEST_HOOKS": "range_done=tests.hooks:hold_the_job",
        "PSYNC_TEST_HOLD_MARKER": str(held),
    }
    first = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", *file_args(pg_dsn, out, "--batch-rows", "100")],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not held.exists() and time.monotonic() < deadline:
            assert first.poll() is None, first.communicate()
            time.sleep(0.1)
        assert held.exists(), "the first copy never reached a finished range"
        second = run_cli(*file_args(pg_dsn, out))
        assert second.rc == 5, second.stderr
        assert f"target {out / 'items.bson'} is locked by job " in second.stderr
        assert f"(owner {socket.gethostname()}:{first.pid})" in second.stderr
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    # The crashed run's lock went with its process: the next run takes the target.
    third = run_cli(*file_args(pg_dsn, out, "--json"))
    assert third.rc == 0, third.stderr
    assert "removed stale temp parts .items__psync_tmp_" in third.stderr
    assert third.json["rows"] == 4000
    assert len(bson.decode_all((out / "items.bson").read_bytes(), OPTS)) == 4000
    assert sorted(p.name for p in out.iterdir()) == FILES


def test_metadata_json_carries_the_indexes_and_recreates_them(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    tmp_path: Path,
    mongo_db: Database[dict[str, Any]],
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, email text, city text, n int4)")
    pg_conn.execute(
        "INSERT INTO items SELECT g, 'u' || g || '@x', 'c' || (g % 7), g "
        "FROM generate_series(1, 300) g"
    )
    first = run_cli(*file_args(pg_dsn, tmp_path, "--workers", "2"))
    assert first.rc == 0, first.stderr
    meta_file = tmp_path / "items.metadata.json"
    text = meta_file.read_text()
    # mongodump's canonical extended JSON: the numbers typed, as mongorestore reads them.
    assert '"v": {"$numberInt": "2"}' in text and '"_id": {"$numberInt": "1"}' in text
    assert json_util.loads(text) == {
        "options": {},
        "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}],
        "collectionName": "items",
    }

    # Indexes added to the metadata (as a MongoDB target's secondary indexes) survive a re-sync.
    doc = json_util.loads(text)
    doc["indexes"] += [
        {"v": 2, "key": {"email": 1}, "name": "email_1", "unique": True},
        {"v": 2, "key": {"city": 1, "n": -1}, "name": "city_n"},
    ]
    meta_file.write_text(json_util.dumps(doc, json_options=CANONICAL_JSON_OPTIONS))
    pg_conn.execute("UPDATE items SET n = n + 1000 WHERE id = 5")
    second = run_cli(*file_args(pg_dsn, tmp_path, "--collection", "items"))
    assert second.rc == 0, second.stderr
    meta = json_util.loads(meta_file.read_text())
    assert [(ix["name"], list(ix["key"].items()), ix.get("unique")) for ix in meta["indexes"]] == [
        ("_id_", [("_id", 1)], None),
        ("email_1", [("email", 1)], True),
        ("city_n", [("city", 1), ("n", -1)], None),
    ]
    docs = bson.decode_all((tmp_path / "items.bson").read_bytes(), OPTS)
    assert {d["_id"]: d["n"] for d in docs}[5] == 1005

    # What mongorestore does with the two files (there is no mongorestore binary here): insert
    # the documents, then createIndexes with the metadata's index specs.
    mongo_db["restored"].insert_many(docs)
    mongo_db.command({"createIndexes": "restored", "indexes": metadata.indexes_for_create(meta)})
    built = {ix["name"]: ix for ix in mongo_db["restored"].list_indexes()}
    assert set(built) == {"_id_", "email_1", "city_n"}
    assert list(built["city_n"]["key"].items()) == [("city", 1), ("n", -1)]
    assert built["email_1"].get("unique") is True
    with pytest.raises(DuplicateKeyError):
        mongo_db["restored"].insert_one({"_id": 999, "email": "u1@x"})

    # An unreadable metadata file is refused before the copy, and nothing is replaced.
    before = (tmp_path / "items.bson").read_bytes()
    meta_file.write_text('{"indexes": [{"name": "no_key"}]}')
    bad = run_cli(*file_args(pg_dsn, tmp_path))
    assert bad.rc == 4, bad.stderr
    assert f"{meta_file} is not a metadata file mongorestore can read" in bad.stderr
    assert (tmp_path / "items.bson").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == FILES
