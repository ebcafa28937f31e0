"""`--target file:DIR`: a mongorestore-compatible .bson file, swapped into place atomically."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import bson
import psycopg
from bson.codec_options import CodecOptions

from tests.integration.cli_helpers import run_cli

OPTS: CodecOptions[dict[str, Any]] = CodecOptions(tz_aware=True)


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
    assert list(tmp_path.iterdir()) == [tmp_path / "items.bson"]  # no parts left behind

    # A failing run (an infinite timestamp under --infinity error) leaves the file as it was.
    before = (tmp_path / "items.bson").read_bytes()
    pg_conn.execute("UPDATE items SET at = 'infinity' WHERE id = 2500")
    bad = run_cli(*file_args(pg_dsn, tmp_path, "--workers", "2", "--infinity", "error"))
    assert bad.rc == 7, bad.stderr
    assert "_id 2500" in bad.stderr
    assert (tmp_path / "items.bson").read_bytes() == before
    assert list(tmp_path.iterdir()) == [tmp_path / "items.bson"]


def test_file_target_needs_an_existing_directory(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY)")
    run = run_cli(*file_args(pg_dsn, tmp_path / "missing"))
    assert run.rc == 2, run.stderr
    assert "is not a writable directory" in run.stderr
    assert not (tmp_path / "missing").exists()
