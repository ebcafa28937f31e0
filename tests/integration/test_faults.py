"""Fault injection: workers killed, connections cut, servers restarted, the coordinator stopped,
two runs racing for one target. Each test asserts the final state: either the target equals the
source and the job FINISHED with a retried range, or the target is exactly as before, no temp
collection is left and the job is FAILED/ABORTED with a clear message.

The copies use `--batch-rows 10` so that a few thousand rows take seconds on SecantusDB, long
enough to inject a fault mid-range (with 50, warm workers finished the 4000 rows before a test
could pick its victim).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
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
from pymongo.database import Database

from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.servers import MongoServer, SecantusServer, require_restartable

ROWS = 4000
SLOW = ["--batch-rows", "10", "--workers", "2"]
# The faults that hit the COPY stream run with both read loops (source/readloop.py).
each_read_loop = pytest.mark.parametrize("read_loop", ["c", "python"])


def reader_env(read_loop: str) -> dict[str, str]:
    return {"PARALLELSYNC_COPY_READER": read_loop}


# ---------------------------------------------------------------- helpers
class Cli:
    """The CLI as a background process, so a test can hurt it while it runs."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PARALLELSYNC_", "SLOTNAME"))
        } | (env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parallelsync", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait(self, timeout: float = 240) -> Run:
        out, err = self.proc.communicate(timeout=timeout)
        return Run(self.proc.returncode, out, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


@pytest.fixture
def cli_runs() -> Iterator[list[Cli]]:
    runs: list[Cli] = []
    yield runs
    for r in runs:  # never leave a coordinator behind when an assertion fails
        r.kill()


def children(pid: int) -> list[int]:
    """Direct children of `pid`, from /proc (psutil may not be installed)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):  # the process or thread just ended
            out += [int(p) for p in task.read_text().split()]
    return out


def worker_pids(coordinator: int) -> list[int]:
    """The worker processes: children of the fork server the coordinator started (or, where
    workers are spawned, its `spawn_main` children); not the server or the resource tracker."""
    pids = []
    for pid in children(coordinator):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        if b"forkserver" in cmd:
            pids += children(pid)
        elif b"spawn_main" in cmd:
            pids.append(pid)
    return pids


def kill_workers(cli: Cli) -> list[int]:
    """SIGKILL every worker of a running copy.

    All of them, not one: a worker can be between two ranges (or done with its share) when the
    test strikes, and then its death costs no range an attempt; with every worker killed while
    ranges remain, at least one range is interrupted."""
    victims: list[int] = wait_for(lambda: worker_pids(cli.pid), "worker processes", proc=cli)
    for pid in victims:
        os.kill(pid, signal.SIGKILL)
    return victims


def wait_for(
    pred: Callable[[], Any], what: str, timeout: float = 60, proc: Cli | None = None
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            run = proc.wait()
            pytest.fail(f"the copy ended (rc {run.rc}) before {what}:\n{run.stderr}")
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout} s waiting for {what}")


def running_rows(db: Database[Any]) -> int:
    job = db.parallelsync_jobs.find_one({"status": "RUNNING"}) or {}
    return int((job.get("totals") or {}).get("rows") or 0)


def temp_names(db: Database[Any]) -> list[str]:
    return [n for n in db.list_collection_names() if "__psync_tmp_" in n]


def temp_docs(db: Database[Any]) -> int:
    """Documents in the run's temp collection so far (0 if it does not exist yet)."""
    return sum(db[n].estimated_document_count() for n in temp_names(db))


def make_table(conn: psycopg.Connection[Any], rows: int = ROWS) -> None:
    conn.execute(
        "CREATE TABLE items (id int8 PRIMARY KEY, name text, qty int4, price numeric(10,2))"
    )
    conn.execute(
        "INSERT INTO items SELECT g, 'item ' || g, g % 97, g * 0.25 "
        f"FROM generate_series(1, {rows}) g"
    )
    conn.execute("ANALYZE items")


def seed_target(db: Database[Any]) -> list[dict[str, Any]]:
    db.items.insert_many([{"_id": -i, "old": True} for i in range(1, 11)])
    db.items.create_index("name", name="by_name")
    return list(db.items.find().sort("_id"))


def assert_target_equals_source(conn: psycopg.Connection[Any], db: Database[Any]) -> None:
    rows = conn.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()
    docs = [(d["_id"], d["name"], d["qty"]) for d in db.items.find({}, {"price": 0}).sort("_id")]
    assert docs == [tuple(r) for r in rows]
    assert {ix["name"] for ix in db.items.list_indexes()} == {"_id_", "by_name"}
    assert temp_names(db) == []
    assert db.parallelsync_locks.count_documents({}) == 0


def assert_target_untouched(db: Database[Any], before: list[dict[str, Any]]) -> None:
    assert list(db.items.find().sort("_id")) == before
    assert temp_names(db) == []


def finished_job(db: Database[Any], run: Run, read_loop: str | None = None) -> dict[str, Any]:
    assert run.rc == 0, run.stderr
    job = db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None
    assert job["status"] == "FINISHED", job.get("error")
    assert all(r["status"] == "DONE" for r in job["ranges"])
    assert sum(r["rows"] for r in job["ranges"]) == job["totals"]["rows"]
    if read_loop is not None:  # the workers read every range with that loop
        assert job["read_loop"] == run.json["read_loop"] == read_loop
    return dict(job)


def only_job(db: Database[Any]) -> dict[str, Any]:
    jobs = list(db.parallelsync_jobs.find())
    assert len(jobs) == 1, jobs
    return dict(jobs[0])


def copy_items(pg_dsn: str, mongo_uri: str, db: Database[Any], *extra: str) -> list[str]:
    return copy_args(pg_dsn, "items", mongo_uri, db.name, *SLOW, "--json", *extra)


# ---------------------------------------------------------------- retries
@each_read_loop
def test_sigkill_of_a_worker_mid_range_is_retried(
    read_loop: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    seed_target(mongo_db)
    cli = Cli(*copy_items(pg_dsn, mongo_uri, mongo_db), env=reader_env(read_loop))
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 200, "the first documents", proc=cli)
    kill_workers(cli)
    run = cli.wait()
    job = finished_job(mongo_db, run, read_loop)
    assert max(r["attempts"] for r in job["ranges"]) >= 2, (job["ranges"], run.stderr)
    assert "exited with code -9" in run.stderr
    assert_target_equals_source(pg_conn, mongo_db)


@each_read_loop
def test_terminated_backend_is_retried(
    read_loop: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    seed_target(mongo_db)
    cli = Cli(*copy_items(pg_dsn, mongo_uri, mongo_db), env=reader_env(read_loop))
    cli_runs.append(cli)
    dbname = pg_dsn.rsplit("/", 1)[1]

    def terminate_a_copy() -> bool:
        row = pg_conn.execute(
            """SELECT pg_terminate_backend(pid) FROM pg_stat_activity
               WHERE datname = %s AND application_name = 'parallelsync' AND query LIKE 'COPY (%%'
               LIMIT 1""",
            (dbname,),
        ).fetchone()
        return bool(row and row[0])

    # A range's COPY is usually sent in full before the worker has inserted it (socket buffers),
    # so the backend may be idle in transaction: killing it then fails the worker's next range.
    wait_for(lambda: temp_docs(mongo_db) >= 100, "the first documents", proc=cli)
    wait_for(terminate_a_copy, "a worker's COPY in pg_stat_activity", proc=cli)
    run = cli.wait()
    job = finished_job(mongo_db, run, read_loop)
    assert max(r["attempts"] for r in job["ranges"]) >= 2, (job["ranges"], run.stderr)
    assert "terminat" in run.stderr  # the retry log line names the cause
    assert_target_equals_source(pg_conn, mongo_db)


def test_mongodb_restart_mid_run_is_survived(
    mongo_server: MongoServer,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    """A server back within the retry window: the user expects the copy to recover.

    A short outage is usually absorbed by the driver's retryable writes (the insert waits for
    server selection, up to 15 s) and no range needs a second attempt; a longer one fails the
    batch with a network error and the range is retried. Either way: FINISHED, target == source.
    """
    require_restartable(mongo_server)
    assert isinstance(mongo_server, SecantusServer)
    make_table(pg_conn)
    seed_target(mongo_db)
    cli = Cli(*copy_items(pg_dsn, mongo_uri, mongo_db, "--max-attempts", "5"))
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 300, "the first documents", proc=cli)
    mongo_server.stop()
    time.sleep(2)
    mongo_server.start()
    run = cli.wait()
    finished_job(mongo_db, run)
    assert_target_equals_source(pg_conn, mongo_db)


def test_mongodb_down_for_good_fails_cleanly(
    mongo_server: MongoServer,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    """The server does not come back within the retries: FAILED with a network message, and
    once it is back, the target is as before and the next run removes the leftover temp."""
    require_restartable(mongo_server)
    make_table(pg_conn)
    before = seed_target(mongo_db)
    # A short server selection timeout keeps the test quick: every call to the dead server waits
    # that long (the default is 15 s) before it gives up.
    quick = mongo_uri + "?serverSelectionTimeoutMS=3000"
    cli = Cli(*copy_items(pg_dsn, quick, mongo_db, "--max-attempts", "1"))
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 300, "the first documents", proc=cli)
    mongo_server.stop()
    try:
        run = cli.wait(timeout=180)
    finally:
        mongo_server.start()
    assert run.rc == 4, run.stderr
    assert "MongoDB" in run.stderr and "Traceback" not in run.stderr
    assert list(mongo_db.items.find().sort("_id")) == before
    # The job document could not be marked FAILED while the server was down.
    first = only_job(mongo_db)
    assert first["status"] in ("RUNNING", "FAILED")
    # Neither could the temp be dropped nor the lease released while the server was down. The
    # lease blocks the target until it expires (60 s); pretend that time has passed. Then the next
    # run takes the lease over and removes the temp.
    lease = mongo_db.parallelsync_locks.find_one()
    if lease is not None:
        run2 = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
        assert run2.rc == 5 and f"locked by job {lease['job_id']}" in run2.stderr, run2.stderr
        past = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
        expire = {"$set": {"expires_at": past}}
        mongo_db.parallelsync_locks.update_one({"_id": lease["_id"]}, expire)
    run2 = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    second = finished_job(mongo_db, run2)
    assert_target_equals_source(pg_conn, mongo_db)
    # Whatever the first job's document said, it is not left RUNNING once its temp is gone.
    old_job = mongo_db.parallelsync_jobs.find_one({"_id": first["_id"]})
    assert old_job is not None and old_job["status"] == "FAILED"
    if first["status"] == "RUNNING":
        assert f"job {second['_id']} took over the target" in old_job["error"]


def test_terminal_error_fails_at_once_without_retry(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    """An unencodable value fails the same way every time: FAILED on the first attempt."""
    pg_conn.execute("CREATE TABLE items (id int8 PRIMARY KEY, at timestamptz)")
    pg_conn.execute(
        "INSERT INTO items SELECT g, CASE WHEN g = 700 THEN 'infinity' ELSE now() END "
        "FROM generate_series(1, 1000) g"
    )
    pg_conn.execute("ANALYZE items")
    before = seed_target(mongo_db)
    run = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db, "--infinity", "error"))
    assert run.rc == 7, run.stderr
    assert "of the row with _id 700: infinity has no BSON date" in run.stderr
    assert "retrying" not in run.stderr
    assert_target_untouched(mongo_db, before)
    job = only_job(mongo_db)
    assert job["status"] == "FAILED" and "_id 700" in job["error"]
    assert all(r["attempts"] <= 1 for r in job["ranges"])
    assert mongo_db.parallelsync_locks.count_documents({}) == 0


# ---------------------------------------------------------------- abort
@each_read_loop
def test_sigterm_of_the_coordinator_aborts_cleanly(
    read_loop: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    before = seed_target(mongo_db)
    cli = Cli(
        *copy_items(pg_dsn, mongo_uri, mongo_db, "--slot", "abort_slot"), env=reader_env(read_loop)
    )
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 200, "the first documents", proc=cli)
    # ... and the coordinator has counted some of them (the job document says so).
    recorded = wait_for(lambda: running_rows(mongo_db), "rows in the job document", proc=cli)
    workers = worker_pids(cli.pid)
    assert workers
    cli.proc.send_signal(signal.SIGTERM)
    run = cli.wait(timeout=60)
    assert run.rc == 130, run.stderr
    assert "interrupted" in run.stderr
    assert_target_untouched(mongo_db, before)
    assert mongo_db.parallelsync_locks.count_documents({}) == 0
    job = only_job(mongo_db)
    assert job["status"] == "ABORTED" and "interrupted" in job["error"]
    assert job["read_loop"] == read_loop  # chosen at the start (no range finished)
    assert run.json["status"] == "ABORTED"
    # Issue 11 item 11: the summary is true. The slot was dropped, so no LSN is offered as a
    # place to resume from; no Python None; the rows copied before the abort are counted.
    assert "consistent LSN    - (the run's slot abort_slot was dropped)" in run.stderr
    assert "None" not in run.stderr
    assert run.json["rows"] >= recorded
    rows_line = [ln for ln in run.stderr.splitlines() if ln.strip().startswith("rows ")]
    assert rows_line and rows_line[0].split()[-1] != "0", run.stderr
    assert not [p for p in workers if Path(f"/proc/{p}").exists() and b"Z" not in _state(p)]
    slots = pg_conn.execute(
        "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'abort_slot'"
    ).fetchone()
    assert slots == (0,)
    dbname = pg_dsn.rsplit("/", 1)[1]
    left = pg_conn.execute(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = %s AND application_name = 'parallelsync'",
        (dbname,),
    ).fetchone()
    assert left == (0,), "the snapshot or a worker connection was left open"


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b") ")[1][:1]
    except (OSError, IndexError):
        return b"Z"


def test_second_signal_exits_at_once_and_next_run_cleans_up(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    seed_target(mongo_db)
    cli = Cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    cli_runs.append(cli)
    wait_for(lambda: temp_docs(mongo_db) >= 200, "the first documents", proc=cli)
    cli.proc.send_signal(signal.SIGINT)
    cli.proc.send_signal(signal.SIGINT)
    t0 = time.monotonic()
    run = cli.wait(timeout=60)
    assert time.monotonic() - t0 < 15
    assert run.rc == 130, run.stderr
    # Whatever the second signal left (a temp collection, a RUNNING job) is gone after a new run.
    run2 = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    finished_job(mongo_db, run2)
    assert_target_equals_source(pg_conn, mongo_db)


# ---------------------------------------------------------------- the lease
def test_second_run_on_the_same_target_refuses(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    make_table(pg_conn)
    seed_target(mongo_db)
    first = Cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    cli_runs.append(first)
    lease = wait_for(
        lambda: mongo_db.parallelsync_locks.find_one(), "the first run's lease", proc=first
    )
    second = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    assert second.rc == 5, second.stderr
    assert f"is locked by job {lease['job_id']}" in second.stderr
    assert "Traceback" not in second.stderr
    job = finished_job(mongo_db, first.wait())
    assert job["_id"] == lease["job_id"]
    assert_target_equals_source(pg_conn, mongo_db)


def test_expired_lease_of_a_dead_job_is_taken_over(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    make_table(pg_conn, 500)
    seed_target(mongo_db)
    ns = f"{mongo_db.name}.items"
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    mongo_db.parallelsync_locks.insert_one(
        {
            "_id": ns,
            "job_id": "20200101T000000_dead00",
            "owner": "gone:1",
            "token": 41,
            "expires_at": past,
            "heartbeat_at": past,
        }
    )
    stale = "items__psync_tmp_20200101T000000_dead00"
    mongo_db[stale].insert_many([{"_id": i, "half": True} for i in range(30)])
    run = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    finished_job(mongo_db, run)
    assert f"removed stale temp collection {stale}" in run.stderr
    assert_target_equals_source(pg_conn, mongo_db)


def test_live_lease_of_another_job_refuses(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    make_table(pg_conn, 100)
    before = seed_target(mongo_db)
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5)
    mongo_db.parallelsync_locks.insert_one(
        {
            "_id": f"{mongo_db.name}.items",
            "job_id": "20200101T000000_alive0",
            "owner": "h:2",
            "token": 3,
            "expires_at": future,
        }
    )
    run = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    assert run.rc == 5, run.stderr
    assert "is locked by job 20200101T000000_alive0" in run.stderr
    assert_target_untouched(mongo_db, before)
    lease = mongo_db.parallelsync_locks.find_one()
    assert lease is not None and lease["token"] == 3  # not ours to touch


def test_swap_checks_the_fencing_token(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    """Another job took the lease (ours expired while we were stalled): we must not swap."""
    make_table(pg_conn, 2000)
    before = seed_target(mongo_db)
    cli = Cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    cli_runs.append(cli)
    lease = wait_for(lambda: mongo_db.parallelsync_locks.find_one(), "the lease", proc=cli)
    mongo_db.parallelsync_locks.update_one(
        {"_id": lease["_id"]},
        {"$set": {"job_id": "20990101T000000_thief0", "owner": "other:9"}, "$inc": {"token": 1}},
    )
    run = cli.wait()
    assert run.rc == 4, run.stderr
    assert "lease" in run.stderr and "nothing was swapped" in run.stderr
    assert_target_untouched(mongo_db, before)
    assert only_job(mongo_db)["status"] == "FAILED"
    # The thief's lease is left alone.
    lease = mongo_db.parallelsync_locks.find_one()
    assert lease is not None and lease["job_id"] == "20990101T000000_thief0"


# ---------------------------------------------------------------- writers during the copy
def test_invariant_holds_with_a_worker_killed_under_concurrent_transfers(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],
) -> None:
    n, total = 4000, 4000 * 1000
    pg_conn.execute("CREATE TABLE accounts (id int4 PRIMARY KEY, balance int8 NOT NULL)")
    pg_conn.execute(f"INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {n}) g")
    pg_conn.execute("ANALYZE accounts")
    stop = threading.Event()
    transfers = [0]

    def transfer() -> None:
        rnd = random.Random(11)
        with psycopg.connect(pg_dsn, autocommit=False) as c:
            while not stop.is_set():
                a, b = rnd.randint(1, n), rnd.randint(1, n)
                amount = rnd.randint(1, 500)
                c.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                c.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                c.commit()
                transfers[0] += 1

    thread = threading.Thread(target=transfer)
    thread.start()
    try:
        cli = Cli(
            *copy_args(
                pg_dsn, "accounts", mongo_uri, mongo_db.name, *SLOW, "--slot", "inv_slot", "--json"
            )
        )
        cli_runs.append(cli)
        wait_for(lambda: temp_docs(mongo_db) >= 500, "the first documents", proc=cli)
        before_kill = transfers[0]
        kill_workers(cli)
        run = cli.wait()
    finally:
        stop.set()
        thread.join()
    assert transfers[0] > before_kill + 5, "the transfers did not overlap the retry"
    job = finished_job(mongo_db, run)
    assert max(r["attempts"] for r in job["ranges"]) >= 2
    agg = list(
        mongo_db.accounts.aggregate(
            [{"$group": {"_id": None, "s": {"$sum": "$balance"}, "c": {"$sum": 1}}}]
        )
    )
    assert agg[0]["c"] == n
    assert agg[0]["s"] == total


def test_postgres_restart_mid_copy_fails_cleanly_and_a_new_copy_finishes(
    tmp_path: Path,
    pg_cluster: Any,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    """Issue 11 item 13 (docs/failures.md): the exported snapshot dies with the server, so no
    retry can import it again: the run fails with exit 3 and leaves the target as it was; the
    thing to run next is the copy again (the failed job dropped its temp: nothing to resume)."""
    require_restartable(pg_cluster)
    make_table(pg_conn)
    before = seed_target(mongo_db)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    env |= {
        "PARALLELSYNC_TEST_HOOKS": "range_done=tests.hooks:hold_until_released",
        "PARALLELSYNC_TEST_HOLD_DIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync", *copy_items(pg_dsn, mongo_uri, mongo_db)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env=env,
    )  # fmt: skip
    try:
        # Held at the first finished range: the snapshot is exported, other ranges in flight.
        wait_for(lambda: (tmp_path / "reached").exists(), "the first finished range")
        pg_conn.close()
        pg_cluster.restart()
        (tmp_path / "release").write_text("go")
        _out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 3, err
    assert "importing the snapshot failed: invalid snapshot identifier" in err, err
    assert "PostgreSQL restarted" in err and "run the copy again" in err, err
    assert "Traceback" not in err and "internal error" not in err
    assert_target_untouched(mongo_db, before)
    assert mongo_db.parallelsync_locks.count_documents({}) == 0
    assert only_job(mongo_db)["status"] == "FAILED"
    resume = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db, "--resume", "last"))
    assert resume.rc == 2 and "start a new copy" in resume.stderr, resume.stderr
    again = run_cli(*copy_items(pg_dsn, mongo_uri, mongo_db))
    finished_job(mongo_db, again)
    with psycopg.connect(pg_dsn) as conn:
        assert_target_equals_source(conn, mongo_db)
