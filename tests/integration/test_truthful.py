"""Messages that are true, no silent downgrade: what a copy says when things are not as asked."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import bson
import psycopg
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli


def make_src(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    conn.execute("INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 30) g")


def test_zero_rows_do_not_replace_a_non_empty_target_unless_allowed(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_src(pg_conn)
    mongo_db.src.insert_many([{"_id": i, "v": "old"} for i in range(5)])
    run = run_cli(*copy_args(pg_dsn, "src", mongo_uri, mongo_db.name, "--where", "id > 1000"))
    assert run.rc == 2, run.stderr
    assert "the source yields no rows" in run.stderr
    assert f"would replace {mongo_db.name}.src, which holds 5 documents" in run.stderr
    assert "pass --allow-empty to replace it anyway" in run.stderr
    assert mongo_db.src.count_documents({"v": "old"}) == 5
    assert [n for n in mongo_db.list_collection_names() if "__psync_tmp_" in n] == []
    allowed = run_cli(
        *copy_args(pg_dsn, "src", mongo_uri, mongo_db.name, "--where", "id > 1000",
                   "--allow-empty", "--json")
    )  # fmt: skip
    assert allowed.rc == 0, allowed.stderr
    assert allowed.json["rows"] == 0 and mongo_db.src.count_documents({}) == 0
    # An empty target may always be replaced by an empty result: nothing is lost.
    again = run_cli(*copy_args(pg_dsn, "src", mongo_uri, mongo_db.name, "--where", "false"))
    assert again.rc == 0, again.stderr


def test_zero_rows_do_not_replace_a_non_empty_file(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, tmp_path: Path
) -> None:
    make_src(pg_conn)
    args = ["copy", "--source", pg_dsn, "--table", "src", "--target", f"file:{tmp_path}"]
    assert run_cli(*args).rc == 0
    before = (tmp_path / "src.bson").read_bytes()
    assert len(bson.decode_all(before)) == 30
    empty = run_cli(*args, "--where", "false")
    assert empty.rc == 2, empty.stderr
    assert "which holds 30 documents" in empty.stderr
    assert (tmp_path / "src.bson").read_bytes() == before
    assert run_cli(*args, "--where", "false", "--allow-empty").rc == 0
    assert (tmp_path / "src.bson").read_bytes() == b""


def test_an_error_before_the_job_exists_prints_only_the_message(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_src(pg_conn)
    message = (
        "parallelsync: error: table 'nope' does not exist in the search path (public), or the "
        "user cannot see it; names with capitals or spaces need double quotes"
    )
    run = run_cli(*copy_args(pg_dsn, "nope", mongo_uri, mongo_db.name))
    assert run.rc == 3, run.stderr
    # The phase it failed in, then the message: no summary block, there is no job to summarise.
    started, failed, error = run.stderr.strip().splitlines()
    assert started == "[preflight] started"
    assert re.fullmatch(r"\[preflight\] failed after \d+\.\d s", failed), failed
    assert error == message
    quiet = run_cli(*copy_args(pg_dsn, "nope", mongo_uri, mongo_db.name, "--quiet"))
    assert quiet.rc == 3 and quiet.stderr.strip().splitlines() == [message]
    as_json = run_cli(*copy_args(pg_dsn, "nope", mongo_uri, mongo_db.name, "--log-format", "json"))
    events = [json.loads(ln) for ln in as_json.stderr.splitlines()]
    assert [e["event"] for e in events] == ["phase", "phase", "error"], events
    assert events[-1]["message"] == message.removeprefix("parallelsync: error: ")
    assert events[-1]["exit_code"] == as_json.rc == 3
    assert "parallelsync_jobs" not in mongo_db.list_collection_names()


def test_plan_piped_into_head_ends_quietly(pg_conn: psycopg.Connection[Any], pg_dsn: str) -> None:
    """Issue 11 item 12: `plan | head` is not an internal error when head stops reading."""
    pg_conn.execute("CREATE TABLE wide (id int4 PRIMARY KEY)")
    pg_conn.execute("INSERT INTO wide SELECT generate_series(1, 200000)")
    pg_conn.execute("ANALYZE wide")
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    args = ["plan", "--source", pg_dsn, "--table", "wide", "--workers", "8"]
    # Far more output than a pipe buffers (64 KiB), so writes go on after the reader left.
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", *args, "--ranges-per-worker", "2000"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env,
    )  # fmt: skip
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -n 1` does once it has its line
    err = proc.stderr.read().decode()
    rc = proc.wait(timeout=120)
    assert first, err
    assert rc == 0, err
    assert "internal error" not in err and "BrokenPipe" not in err and "Traceback" not in err
