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
    assert sorted(p.name for p in out.iterdir()) == ["items.bson"]
