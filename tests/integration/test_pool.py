"""Workers are forked from a fork server that loaded their code once (pool.py): a job that fails
before it needs them must leave no process behind, and forked workers must copy every row."""

from __future__ import annotations

import multiprocessing
import time
from pathlib import Path
from typing import Any

import psycopg
from pymongo.database import Database

from parallelsync.config import CopyConfig, build_copy_config
from parallelsync.job.copy import CopyJob
from parallelsync.workers.pool import WorkerPool


def config(pg_dsn: str, mongo_uri: str, db: str, table: str, workers: int) -> CopyConfig:
    return build_copy_config(
        {
            "source": pg_dsn,
            "table": table,
            "target": mongo_uri,
            "db": db,
            "collection": "items",
            "workers": workers,
            "progress_seconds": 0,
        },
        env={},
    )


def test_workers_are_forked_from_a_warm_server() -> None:
    pool = WorkerPool()
    assert pool._ctx.get_start_method() == "forkserver"
    pool.prestart()
    from multiprocessing import forkserver

    server = forkserver._forkserver._forkserver_pid
    assert server is not None
    # Right after the launch the server may still be between fork and exec: poll its cmdline.
    deadline = time.monotonic() + 10
    cmdline = b""
    while b"parallelsync.workers.preload" not in cmdline and time.monotonic() < deadline:
        cmdline = Path(f"/proc/{server}/cmdline").read_bytes()
        time.sleep(0.05)
    assert b"parallelsync.workers.preload" in cmdline


def test_a_job_failing_before_its_snapshot_leaves_no_worker(
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    result = CopyJob(config(pg_dsn, mongo_uri, mongo_db.name, "no_such_table", 3)).run()
    assert result.status == "FAILED"
    assert "no_such_table" in (result.error or "")
    assert multiprocessing.active_children() == []
    assert "items" not in mongo_db.list_collection_names()


def test_forked_workers_copy_every_row_and_are_stopped(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE items (id int8 PRIMARY KEY, v text, j jsonb)")
    pg_conn.execute(
        "INSERT INTO items SELECT i, 'v' || i, jsonb_build_object('n', i) "
        "FROM generate_series(1, 3000) i"
    )
    result = CopyJob(config(pg_dsn, mongo_uri, mongo_db.name, "items", 2)).run()
    assert result.status == "FINISHED", result.error
    assert result.rows == 3000 and result.docs == 3000
    assert mongo_db["items"].count_documents({}) == 3000
    doc = mongo_db["items"].find_one({"_id": 2999})
    assert doc == {"_id": 2999, "v": "v2999", "j": {"n": 2999}}
    assert multiprocessing.active_children() == []
