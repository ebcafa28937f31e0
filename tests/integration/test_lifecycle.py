"""Nothing the job started outlives it: processes, backends, writes and signals (issue 10,
items 9, 10, 13, 14, 15).

Each test drives the real command line against the private servers and waits for states (a
number of documents in the temp collection, a backend waiting on a lock), never for a time. The
few fixed waits below check that something does *not* happen (a late insert re-creating a
dropped collection); they say so where they are.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import OperationFailure

from tests.integration.cli_helpers import run_cli
from tests.integration.test_faults import (
    Cli,
    assert_target_equals_source,
    assert_target_untouched,
    children,
    copy_items,
    each_read_loop,
    finished_job,
    make_table,
    only_job,
    reader_env,
    seed_target,
    temp_docs,
    temp_names,
    wait_for,
    worker_pids,
)

# How long a late write gets to show itself: an insert a killed worker had already sent is run
# by the server within milliseconds; 3 s covers a loaded test machine.
LATE_WRITE_WINDOW_S = 3.0


# The command line with workers spawned instead of forked from a fork server (the pool's choice
# where a platform has no fork server, or if the fork server goes away), so the lifecycle holds
# for children of the coordinator as well as for its grandchildren.
SPAWN_MAIN = """
import multiprocessing, sys
import parallelsync.workers.pool as pool
pool._context = lambda: multiprocessing.get_context("spawn")
from parallelsync.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


class SpawnCli(Cli):
    """`Cli` with the workers spawned."""

    def __init__(self, *args: str) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PARALLELSYNC_", "SLOTNAME"))
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SPAWN_MAIN, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )


def start_cli(method: str, *args: str) -> Cli:
    return SpawnCli(*args) if method == "spawn" else Cli(*args)


@pytest.fixture
def cli_runs() -> Iterator[list[Cli]]:
    runs: list[Cli] = []
    yield runs
    for r in runs:  # never leave a coordinator behind when an assertion fails
        r.kill()


def alive(pid: int) -> bool:
    """The process exists and is not a zombie (an orphan's zombie may wait for a busy init)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_bytes()
    except OSError:
        return False
    return stat.rsplit(b") ", 1)[1][:1] != b"Z"


def job_backends(conn: psycopg.Connection[Any], dsn: str) -> list[tuple[Any, ...]]:
    """The job's PostgreSQL sessions (pid, state, backend_xmin) in this test's database."""
    dbname = dsn.rsplit("/", 1)[1]
    return conn.execute(
        "SELECT pid, state, backend_xmin::text FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'parallelsync'",
        (dbname,),
    ).fetchall()


def stays_absent(what: Callable[[], list[str]], seconds: float) -> list[str]:
    """Watch for `seconds` that `what()` stays empty; returns what appeared, if anything."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = what()
        if found:
            return found
        time.sleep(0.1)
    return what()


def range_statuses(job: dict[str, Any]) -> list[str]:
    return [r["status"] for r in job["ranges"]]


# ---------------------------------------------------------------- item 9: SIGKILL
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_sigkill_of_the_coordinator_leaves_no_process_backend_or_write(
    method: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    seed_target(mongo_db)
    cli = start_cli(method, *copy_items(pg_dsn, mongo_uri, mongo_db, "--workers", "3"))
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 100, "the first documents", proc=cli)
    workers = wait_for(lambda: worker_pids(cli.pid), "worker processes", proc=cli)
    # Multiprocessing's resource tracker and the fork server, or the spawned workers themselves
    # (children of the coordinator).
    helpers = children(cli.pid)
    everything = set(workers) | set(helpers)
    assert len(everything) >= len(workers) + 1, (workers, helpers)
    if method == "spawn":
        assert set(workers) <= set(helpers)
    os.kill(cli.pid, signal.SIGKILL)
    cli.proc.wait(timeout=30)

    left = wait_for(
        lambda: not [p for p in everything if alive(p)] or None,
        "every worker and helper to exit",
        timeout=15,
    )
    assert left is True
    wait_for(
        lambda: job_backends(pg_conn, pg_dsn) == [],
        f"the job's backends to end: {job_backends(pg_conn, pg_dsn)}",
        timeout=15,
    )
    # Nothing writes into the temp collection any more. The fixed wait checks that nothing
    # happens: an insert still on its way would show as a second, higher count.
    first = temp_docs(mongo_db)
    time.sleep(LATE_WRITE_WINDOW_S)
    assert temp_docs(mongo_db) == first


# ---------------------------------------------------------------- item 10: SIGTERM
def _job_started(db: Database[Any]) -> bool:
    return db.parallelsync_jobs.find_one({"status": "RUNNING"}) is not None


# Where the signal lands, by state. With every insert held 1 s by the server (a fail point), each
# busy worker has an insert in flight at that moment, as production batches of 10 000 documents
# mostly do: the case that used to re-create the temp collection after the drop.
SIGTERM_ROWS = 8000
SIGTERM_POINTS: dict[str, Callable[[Database[Any]], bool]] = {
    "workers_starting": _job_started,
    "first_documents": lambda db: temp_docs(db) >= 1,
    "1k_documents": lambda db: temp_docs(db) >= 1000,
    "2k_documents": lambda db: temp_docs(db) >= 2000,
    "3k_documents": lambda db: temp_docs(db) >= 3000,
}


@contextlib.contextmanager
def slow_inserts(client: MongoClient[Any], app: str, ms: int) -> Iterator[None]:
    """Hold every `insert` of clients named `app` for `ms` ms before the server runs it."""
    try:
        client.admin.command(
            {
                "configureFailPoint": "failCommand",
                "mode": "alwaysOn",
                "data": {
                    "failCommands": ["insert"],
                    "blockConnection": True,
                    "blockTimeMS": ms,
                    "appName": app,
                },
            }
        )
    except OperationFailure as exc:
        pytest.skip(f"the MongoDB server has no failCommand fail point: {exc}")
    try:
        yield
    finally:
        client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


@pytest.mark.parametrize(
    ("method", "point"),
    [("forkserver", point) for point in SIGTERM_POINTS] + [("spawn", "1k_documents")],
)
def test_sigterm_mid_copy_leaves_no_temp_collection(
    method: str,
    point: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_client: MongoClient[Any],
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn, SIGTERM_ROWS)
    before = seed_target(mongo_db)
    app = "psync_sigterm"
    args = copy_items(pg_dsn, f"{mongo_uri}?appName={app}", mongo_db, "--workers", "3")
    with slow_inserts(mongo_client, app, 1000):
        cli = start_cli(method, *args, "--batch-rows", "500")
        cli_runs.append(cli)
        reached = SIGTERM_POINTS[point]
        wait_for(lambda: reached(mongo_db), point, proc=cli)
        if point == "workers_starting":
            wait_for(lambda: worker_pids(cli.pid), "worker processes", proc=cli)
        cli.proc.send_signal(signal.SIGTERM)
        run = cli.wait(timeout=90)
        assert run.rc == 130, run.stderr
        assert run.json["status"] == "ABORTED"
        assert_target_untouched(mongo_db, before)
        assert mongo_db.parallelsync_locks.count_documents({}) == 0
        job = only_job(mongo_db)
        assert job["status"] == "ABORTED" and "interrupted" in job["error"]
        # An insert a worker had in flight must not re-create the temp collection after the
        # drop (the fail point still holds inserts, so a late one would land in this window).
        assert stays_absent(lambda: temp_names(mongo_db), LATE_WRITE_WINDOW_S) == []
    # Item 15: no range of an ended job still says RUNNING.
    assert "RUNNING" not in range_statuses(job), job["ranges"]
    if point != "workers_starting":  # ranges were in flight: they end INTERRUPTED
        assert "INTERRUPTED" in range_statuses(job), job["ranges"]


def make_table_with_bad_row(conn: psycopg.Connection[Any], bad: int) -> None:
    conn.execute("CREATE TABLE items (id int8 PRIMARY KEY, name text, at timestamptz)")
    conn.execute(
        "INSERT INTO items SELECT g, 'item ' || g, "
        f"CASE WHEN g = {bad} THEN 'infinity' ELSE now() END FROM generate_series(1, 4000) g"
    )
    conn.execute("ANALYZE items")


def test_a_failing_range_leaves_no_temp_collection_while_others_insert(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_client: MongoClient[Any],
    mongo_db: Database[Any],
) -> None:
    """The same on the FAILED path: a terminal error in one range (the last one, 12 ranges of
    ~333 rows, so the job document has recorded ranges in flight by then) while the other
    workers have inserts in flight."""
    make_table_with_bad_row(pg_conn, 3900)
    before = seed_target(mongo_db)
    app = "psync_failing"
    args = copy_items(pg_dsn, f"{mongo_uri}?appName={app}", mongo_db, "--workers", "3")
    with slow_inserts(mongo_client, app, 1000):
        run = run_cli(*args, "--batch-rows", "500", "--infinity", "error")
        assert run.rc == 7, run.stderr
        assert "_id 3900" in run.stderr
        assert_target_untouched(mongo_db, before)
        assert stays_absent(lambda: temp_names(mongo_db), LATE_WRITE_WINDOW_S) == []
    job = only_job(mongo_db)
    assert job["status"] == "FAILED"
    assert "RUNNING" not in range_statuses(job), job["ranges"]
    assert "FAILED" in range_statuses(job), job["ranges"]


# ---------------------------------------------------------------- item 13: DDL and lock waits
class Statement:
    """A statement on its own connection, in a thread: it may block on a lock for a long time."""

    def __init__(self, dsn: str, statement: str) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(statement,), daemon=True)
        self.thread.start()

    def _run(self, statement: str) -> None:
        try:
            self.conn.execute(statement)
        except psycopg.Error as exc:
            self.error = exc

    def waiting_for_a_lock(self, admin: psycopg.Connection[Any]) -> bool:
        row = admin.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (self.pid,)
        ).fetchone()
        return row is not None and row[0] == "Lock"

    def done(self) -> bool:
        return not self.thread.is_alive()

    def cancel(self, admin: psycopg.Connection[Any]) -> None:
        if self.thread.is_alive():
            admin.execute("SELECT pg_cancel_backend(%s)", (self.pid,))
        self.thread.join(30)
        self.conn.close()


ADD_COLUMN = "ALTER TABLE items ADD COLUMN extra int"


def test_ddl_waiting_behind_the_copy_does_not_hang_a_retried_range(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    """The ALTER waits for the workers' locks; a worker is killed mid-range, and its
    replacement's COPY queues behind the ALTER. The copy must end by itself: idle workers are
    released (the ALTER then goes ahead and the retry with it), and a COPY that cannot get its
    lock fails after --lock-timeout-seconds and is retried."""
    make_table(pg_conn)
    before = seed_target(mongo_db)
    # 16 ranges and an early ALTER: many ranges are left for the replacement worker to take.
    args = copy_items(pg_dsn, mongo_uri, mongo_db, "--lock-timeout-seconds", "3")
    cli = Cli(*args, "--max-attempts", "5", "--ranges-per-worker", "8")
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 50, "the first documents", proc=cli)
    alter = Statement(pg_dsn, ADD_COLUMN)
    try:
        wait_for(lambda: alter.waiting_for_a_lock(pg_conn), "the ALTER to wait", proc=cli)
        victim = wait_for(lambda: worker_pids(cli.pid), "worker processes", proc=cli)[0]
        os.kill(victim, signal.SIGKILL)
        run = cli.wait(timeout=180)  # a hang fails here
        if run.rc == 0:
            finished_job(mongo_db, run)
            assert_target_equals_source(pg_conn, mongo_db)
            # With the copy's transactions gone, the ALTER went ahead by itself.
            wait_for(alter.done, "the ALTER to finish after the copy", timeout=30)
            assert alter.error is None, alter.error
        else:
            assert run.rc == 3, run.stderr
            assert "could not lock public.items within 3 s" in run.stderr
            assert f"pid {alter.pid} (ALTER TABLE items ADD COLUMN extra int)" in run.stderr
            assert_target_untouched(mongo_db, before)
    finally:
        alter.cancel(pg_conn)


def test_a_copy_that_cannot_get_its_lock_fails_naming_the_ddl(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    """Another session's transaction holds the table; an ALTER queues behind it, and every
    new COPY behind the ALTER: each attempt times out, and the job fails saying who is waiting."""
    make_table(pg_conn)
    before = seed_target(mongo_db)
    args = copy_items(pg_dsn, mongo_uri, mongo_db, "--lock-timeout-seconds", "2")
    cli = Cli(*args, "--max-attempts", "2")
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 200, "the first documents", proc=cli)
    reader = psycopg.connect(pg_dsn)  # a long transaction that read the table: ACCESS SHARE
    reader.execute("SELECT 1 FROM items LIMIT 1")
    alter = Statement(pg_dsn, ADD_COLUMN)
    try:
        wait_for(lambda: alter.waiting_for_a_lock(pg_conn), "the ALTER to wait", proc=cli)
        kill_all = wait_for(lambda: worker_pids(cli.pid), "worker processes", proc=cli)
        for pid in kill_all:  # their replacements start without the lock
            os.kill(pid, signal.SIGKILL)
        run = cli.wait(timeout=180)  # a hang fails here
    finally:
        alter.cancel(pg_conn)
        reader.close()
    assert run.rc == 3, run.stderr
    assert re.search(
        r"range \d+ failed 2 times; last error: could not lock public\.items", run.stderr
    )
    assert (
        f"within 2 s: pid {alter.pid} (ALTER TABLE items ADD COLUMN extra int) is waiting for an "
        "exclusive lock on it, and this copy's reads queue behind it; cancel that statement or "
        "let the copy finish first"
    ) in run.stderr, run.stderr
    assert "Traceback" not in run.stderr
    assert_target_untouched(mongo_db, before)
    job = only_job(mongo_db)
    assert job["status"] == "FAILED" and "could not lock public.items" in job["error"]
    assert "RUNNING" not in range_statuses(job), job["ranges"]
    assert job_backends(pg_conn, pg_dsn) == []


# ---------------------------------------------------------------- item 14: stalls
@each_read_loop
def test_a_stopped_worker_is_killed_and_its_range_retried(
    read_loop: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    seed_target(mongo_db)
    cli = Cli(
        *copy_items(pg_dsn, mongo_uri, mongo_db, "--stall-seconds", "3"), env=reader_env(read_loop)
    )
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 200, "the first documents", proc=cli)
    # All of them, as kill_workers does: at least one is then frozen in the middle of a range.
    frozen = wait_for(lambda: worker_pids(cli.pid), "worker processes", proc=cli)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        run = cli.wait(timeout=180)
    finally:
        for pid in frozen:  # never leave a stopped process behind
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
    job = finished_job(mongo_db, run, read_loop)
    stalls = re.findall(
        r"range (\d+): worker \d+ \(pid (\d+)\) sent nothing for (\d+) s; killed it, "
        r"retrying the range",
        run.stderr,
    )
    assert stalls, run.stderr
    by_id = {r["id"]: r for r in job["ranges"]}
    for rid, pid, seconds in stalls:
        assert int(pid) in frozen
        assert int(seconds) >= 3
        assert by_id[int(rid)]["attempts"] == 2, job["ranges"]
    assert_target_equals_source(pg_conn, mongo_db)


# ---------------------------------------------------------------- item 15: attempts
# Each row costs the COPY 2 ms of server time (only in COPY, not in planning), so a range's COPY
# stays active for about a second: a backend terminated then fails exactly that range.
SLOW_COPY = """
CREATE FUNCTION slow_in_copy() RETURNS boolean LANGUAGE sql VOLATILE AS $$
    SELECT pg_sleep(CASE WHEN current_query() LIKE 'COPY%' THEN 0.002 ELSE 0 END) IS NOT NULL
$$
"""


@each_read_loop
def test_two_blips_on_different_ranges_cost_one_attempt_each(
    read_loop: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    """A worker exits after a transient failure; it must not be handed a range meanwhile (that
    range would count a failed attempt, "worker process N exited with code 0"). With
    --max-attempts 2, two separate blips on two ranges still finish."""
    make_table(pg_conn)
    pg_conn.execute(SLOW_COPY)
    seed_target(mongo_db)
    args = copy_items(pg_dsn, mongo_uri, mongo_db, "--where", "slow_in_copy()")
    cli = Cli(*args, "--max-attempts", "2", "--batch-rows", "100", env=reader_env(read_loop))
    cli_runs.append(cli)
    dbname = pg_dsn.rsplit("/", 1)[1]

    def terminate_a_copy(other_than: str | None) -> str | None:
        rows = pg_conn.execute(
            """SELECT pid, query FROM pg_stat_activity
               WHERE datname = %s AND application_name = 'parallelsync' AND state = 'active'
                 AND query LIKE 'COPY (%%'""",
            (dbname,),
        ).fetchall()
        for pid, query in rows:
            if query != other_than:
                row = pg_conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
                if row and row[0]:
                    return str(query)
        return None

    def copies_of(query: str) -> bool:
        row = pg_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND query = %s "
            "AND state = 'active'",
            (dbname, query),
        ).fetchone()
        return bool(row and row[0])

    wait_for(lambda: temp_docs(mongo_db) >= 100, "the first documents", proc=cli)
    first = wait_for(lambda: terminate_a_copy(None), "a COPY to terminate", proc=cli)
    wait_for(lambda: copies_of(first), "the first range's retry", proc=cli)
    second = wait_for(lambda: terminate_a_copy(first), "another range's COPY", proc=cli)
    run = cli.wait()
    job = finished_job(mongo_db, run, read_loop)
    assert "exited with code" not in run.stderr, run.stderr
    attempts = {r["query"]: r["attempts"] for r in job["ranges"]}
    assert attempts.pop(first) == 2 and attempts.pop(second) == 2, job["ranges"]
    assert set(attempts.values()) == {1}, job["ranges"]
    assert_target_equals_source(pg_conn, mongo_db)
