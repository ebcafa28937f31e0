"""Workers are started before the snapshot exists (they warm up meanwhile): a job that fails
before it needs them must still stop them all, and a warm worker must copy like a fresh one."""

from __future__ import annotations

import multiprocessing
import time
from typing import Any

import psycopg
from pymongo.database import Database

from parallelsync.config import CopyConfig, build_copy_config
from parallelsync.coordinator import CopyJob
from parallelsync.pool import WorkerPool


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


def test_prestarted_workers_are_stopped_by_stop() -> None:
    pool = WorkerPool()
    pool.prestart(2)
    procs = list(multiprocessing.active_children())
    assert len(procs) == 2
    assert all(p.name.startswith("parallelsync-worker-") for p in procs)
    started = time.monotonic()
    pool.stop()
    assert time.monotonic() - started < 10
    assert all(p.exitcode is not None for p in procs)
    assert multiprocessing.active_children() == []


def test_a_job_failing_before_its_snapshot_leaves_no_worker(
    pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    result = CopyJob(config(pg_dsn, mongo_uri, mongo_db.name, "no_such_table", 3)).run()
    assert result.status == "FAILED"
    assert "no_such_table" in (result.error or "")
    assert multiprocessing.active_children() == []
    assert "items" not in mongo_db.list_collection_names()


def test_warm_workers_copy_every_row(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE items (id int8 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO items SELECT i, 'v' || i FROM generate_series(1, 3000) i")
    result = CopyJob(config(pg_dsn, mongo_uri, mongo_db.name, "items", 2)).run()
    assert result.status == "FINISHED", result.error
    assert result.rows == 3000 and result.docs == 3000
    assert mongo_db["items"].count_documents({}) == 3000
    assert mongo_db["items"].find_one({"_id": 2999}) == {"_id": 2999, "v": "v2999"}
    assert multiprocessing.active_children() == []
