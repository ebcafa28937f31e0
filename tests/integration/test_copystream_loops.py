"""copy_batches with either COPY read loop (source/readloop.py): the compiled one and psycopg's
give the same batches, fail with the same errors, cancel alike, and the choice is never silent."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.errors import ParallelSyncError, SourceConnectionLost, SourceError, UsageError
from parallelsync.source import copystream, readloop
from parallelsync.source.connect import connect
from parallelsync.source.copystream import copy_batches
from tests.integration.cli_helpers import copy_args, run_cli

REPO = Path(__file__).resolve().parents[2]
LOOPS: list[readloop.ReadLoop] = ["c", "python"]
each_loop = pytest.mark.parametrize("loop", LOOPS)
ROWS_SQL = (
    "COPY (SELECT i, md5(i::text), i * 1.5::float8, '2020-01-01'::timestamptz + i * interval '1s' "
    "FROM generate_series(1, {n}) AS i) TO STDOUT (FORMAT BINARY)"
)


def batches(
    dsn: str, query: str, loop: readloop.ReadLoop, rows: int, nbytes: int
) -> list[tuple[bytes, int]]:
    before = readloop.stats[loop]
    with connect(dsn, autocommit=True) as conn:
        got = [(bytes(b), s) for b, s in copy_batches(conn, query, dsn, rows, nbytes, loop)]
        assert conn.execute("SELECT 42").fetchone() == (42,)  # idle again
    assert readloop.stats[loop] - before == len(got)  # this loop read them all
    return got


def failure(dsn: str, query: str, loop: readloop.ReadLoop, rows: int = 100) -> ParallelSyncError:
    conn = connect(dsn, autocommit=True)
    try:
        with pytest.raises(ParallelSyncError) as info:
            for _ in copy_batches(conn, query, dsn, rows, 1 << 20, loop):
                pass
    finally:
        conn.close()
    return info.value


def wait_for(pred: Callable[[], Any], what: str, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := pred():
            return value
        time.sleep(0.02)
    pytest.fail(f"timed out waiting for {what}")


# ---------------------------------------------------------------- same batches
@pytest.mark.parametrize(("rows", "batch_rows", "batch_bytes"), [
    (5000, 700, 1 << 20),  # row limit; the header is in the first batch only
    (5000, 100_000, 4096),  # byte limit
    (1, 10, 1 << 20),
    (0, 10, 1 << 20),  # header and trailer only
    (700, 700, 1 << 20),  # the trailer comes after a full batch
])  # fmt: skip
def test_both_loops_give_the_same_batches(
    pg_dsn: str, rows: int, batch_rows: int, batch_bytes: int
) -> None:
    query = ROWS_SQL.format(n=rows)
    c = batches(pg_dsn, query, "c", batch_rows, batch_bytes)
    python = batches(pg_dsn, query, "python", batch_rows, batch_bytes)
    assert c == python
    assert c[0][1] == 19 and all(start == 0 for _, start in c[1:])  # the header, then none
    assert c[-1][0].endswith(b"\xff\xff")  # the trailer


def test_a_pause_of_the_server_keeps_the_batch_whole(pg_dsn: str) -> None:
    """The C loop returns every WAIT_MS while the server is silent; the batch is still one."""
    query = (
        "COPY (SELECT i, md5(i::text), CASE WHEN i = 2000 THEN (SELECT 1 FROM pg_sleep(0.6)) END "
        "FROM generate_series(1, 3000) AS i) TO STDOUT (FORMAT BINARY)"
    )
    c = batches(pg_dsn, query, "c", 100_000, 1 << 24)
    assert c == batches(pg_dsn, query, "python", 100_000, 1 << 24)
    assert len(c) == 1


# ---------------------------------------------------------------- failures
def test_a_server_error_mid_copy_fails_alike(pg_dsn: str) -> None:
    query = (
        "COPY (SELECT 1 / (i - 3000) FROM generate_series(1, 5000) AS i) TO STDOUT (FORMAT BINARY)"
    )
    errors = [failure(pg_dsn, query, loop) for loop in LOOPS]
    assert [type(e) for e in errors] == [SourceError, SourceError]
    assert str(errors[0]) == str(errors[1]) == "COPY failed: division by zero"


def test_a_terminated_backend_fails_alike(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    errors = []
    for loop in LOOPS:
        conn = connect(pg_dsn, autocommit=True)
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
        assert row is not None
        gen = copy_batches(conn, ROWS_SQL.format(n=50_000_000), pg_dsn, 1000, 1 << 20, loop)
        next(gen)  # streaming
        pg_conn.execute("SELECT pg_terminate_backend(%s)", (row[0],))
        with pytest.raises(ParallelSyncError) as info:
            for _ in gen:
                pass
        errors.append(info.value)
        conn.close()
    assert [type(e) for e in errors] == [SourceConnectionLost, SourceConnectionLost]
    assert str(errors[0]) == str(errors[1])
    assert "terminating connection due to administrator command" in str(errors[0])


@each_loop
def test_closing_early_cancels_the_copy(
    loop: readloop.ReadLoop, pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    with connect(pg_dsn, autocommit=True) as conn:
        pid = conn.execute("SELECT pg_backend_pid()").fetchone()
        gen = copy_batches(conn, ROWS_SQL.format(n=50_000_000), pg_dsn, 1000, 1 << 20, loop)
        buf, start = next(gen)
        assert start == 19 and len(buf) > start
        gen.close()
        # The COPY was cancelled, not read to its end: the connection takes a query at once.
        assert conn.execute("SELECT 42").fetchone() == (42,)
        state = pg_conn.execute("SELECT state FROM pg_stat_activity WHERE pid = %s", pid).fetchone()
        assert state == ("idle",)
    # The backend leaves with the connection (its exit is asynchronous: wait for the state).
    wait_for(
        lambda: (
            pg_conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", pid).fetchone() is None
        ),
        "the closed connection's backend to exit",
    )


def test_closing_the_connection_under_a_waiting_c_loop(
    pg_dsn: str, pg_conn: psycopg.Connection[Any]
) -> None:
    """A reader given up on (pipeline.Reader.stop) may still be in the C loop when the worker
    closes its connection: close() waits for it to leave libpq, and the reader then fails cleanly
    instead of reading freed memory."""
    conn = connect(pg_dsn, autocommit=True)
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    # Enough rows before the pause to fill the server's send buffer: the COPY is under way.
    query = (
        "COPY (SELECT i, md5(i::text), CASE WHEN i = 3000 THEN (SELECT 1 FROM pg_sleep(30)) END "
        "FROM generate_series(1, 3001) AS i) TO STDOUT (FORMAT BINARY)"
    )
    outcome: list[BaseException] = []

    def read() -> None:
        try:
            list(copy_batches(conn, query, pg_dsn, 100_000, 1 << 24, "c"))
        except BaseException as exc:
            outcome.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    wait_for(
        lambda: pg_conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE pid = %s AND wait_event = 'PgSleep'", row
        ).fetchone(),
        "the COPY to wait in pg_sleep",
    )
    started = time.monotonic()
    copystream.close(conn)
    assert time.monotonic() - started < 5
    reader.join(10)
    assert not reader.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], SourceConnectionLost), outcome
    assert "the connection is closed" in str(outcome[0])
    pg_conn.execute("SELECT pg_cancel_backend(%s)", row)


# ---------------------------------------------------------------- the choice
def test_the_c_loop_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(readloop.ENV, raising=False)
    assert readloop.choose() == "c"


@pytest.mark.parametrize(("value", "loop"), [("python", "python"), ("c", "c"), (" C ", "c")])
def test_the_switch_forces_a_loop(value: str, loop: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(readloop.ENV, value)
    assert readloop.choose() == loop


def test_an_unknown_loop_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(readloop.ENV, "rust")
    with pytest.raises(UsageError, match="PARALLELSYNC_COPY_READER must be 'c' or 'python'"):
        readloop.choose()


# Makes the extension unimportable in a child process, as on a machine without a compiler.
BLOCK = "import sys; sys.modules['parallelsync._native.copyread'] = None; "
SHOW = (
    "import logging; logging.basicConfig(); from parallelsync.source import readloop; "
    "print(readloop.choose()); print(readloop.choose())"
)


def child(env_value: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != readloop.ENV}
    if env_value is not None:
        env[readloop.ENV] = env_value
    return subprocess.run(
        [sys.executable, "-c", BLOCK + SHOW], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_an_unusable_c_loop_falls_back_with_one_warning() -> None:
    run = child(None)
    assert (run.returncode, run.stdout.split()) == (0, ["python", "python"]), run.stderr
    assert run.stderr.count("the compiled COPY read loop cannot be used") == 1
    assert "the compiled read loop is not built" in run.stderr


def test_an_unusable_c_loop_with_the_switch_on_c_fails_loudly() -> None:
    run = child("c")
    assert run.returncode == 1 and run.stdout == ""
    assert (
        "PARALLELSYNC_COPY_READER=c, but the compiled COPY read loop cannot be used" in run.stderr
    )


# ---------------------------------------------------------------- the command line
def items(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE items (id int8 PRIMARY KEY, name text)")
    conn.execute("INSERT INTO items SELECT g, 'item ' || g FROM generate_series(1, 3000) g")
    conn.execute("ANALYZE items")


@each_loop
def test_the_job_records_the_read_loop_its_workers_ran(
    loop: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    items(pg_conn)
    args = copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--workers", "2", "--json")
    run = run_cli(*args, env={readloop.ENV: loop})
    assert run.rc == 0, run.stderr
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["read_loop"] == run.json["read_loop"] == loop
    assert mongo_db.items.count_documents({}) == 3000
    assert "read loop cannot be used" not in run.stderr


@each_loop
def test_a_server_error_mid_copy_fails_the_job_alike(
    loop: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    items(pg_conn)
    # Division by zero at row 2500, mid-stream, and only in the COPY (not in planning).
    pg_conn.execute(
        "CREATE FUNCTION fails_in_copy(id int8) RETURNS boolean LANGUAGE sql VOLATILE AS $$ "
        "SELECT CASE WHEN current_query() LIKE 'COPY%' THEN 1 / (id - 2500) <> 7 ELSE true END $$"
    )
    mongo_db.items.insert_one({"_id": "keep me"})
    where = "fails_in_copy(id)"
    args = copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--where", where, "--json")
    run = run_cli(*args, "--workers", "1", "--batch-rows", "100", env={readloop.ENV: loop})
    assert run.rc == 3, run.stderr
    assert "COPY failed: division by zero" in run.stderr
    assert list(mongo_db.items.find()) == [{"_id": "keep me"}]
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["status"] == "FAILED" and "division by zero" in job["error"]


def test_an_unknown_read_loop_is_refused_before_anything_is_written(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    items(pg_conn)
    run = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name), env={readloop.ENV: "go"})
    assert run.rc == 2, run.stderr
    assert "PARALLELSYNC_COPY_READER must be 'c' or 'python', not 'go'" in run.stderr
    assert mongo_db.list_collection_names() == []
