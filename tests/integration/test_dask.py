"""`copy --executor dask`: the ranges run as tasks on a real Dask cluster (issue 15).

The cluster is `distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True)`:
a scheduler in this test process and two worker processes (nannies restart a killed one), shared
by the module since it takes seconds to start. The copy runs as a user runs it (the CLI in a
subprocess, `--scheduler` pointing at the cluster), so the coordinator is a separate process
and only the ranges run on the cluster.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.hooks import RANGE_LOCK
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_copy import (
    ALL_TYPES_DDL,
    CODEC,
    assert_collection_equals_table,
    fill_all_types,
    no_temp_collections,
)
from tests.integration.test_faults import (
    Cli,
    assert_target_untouched,
    cli_runs,  # noqa: F401 (a fixture)
    finished_job,
    make_table,
    only_job,
    seed_target,
    wait_for,
)
from tests.integration.test_secrets import (
    assert_nowhere,
    mongo_user,  # noqa: F401 (a fixture)
    pg_database,
    role,  # noqa: F401 (a fixture)
    uri_encoded,
)
from tests.servers import PgServer

distributed = pytest.importorskip("distributed")

BLOCK_FIRST = {"PARALLELSYNC_TEST_HOOKS": "before_workers=tests.hooks:block_first_range"}


def local_cluster(n_workers: int = 2, **kwargs: Any) -> Any:
    import logging

    return distributed.LocalCluster(
        n_workers=n_workers, threads_per_worker=1, processes=True, dashboard_address=":0",
        silence_logs=logging.ERROR, **kwargs,
    )  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with local_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def client(cluster: Any) -> Iterator[Any]:
    with distributed.Client(cluster, set_as_default=False) as c:
        yield c


def dask_args(cluster: Any, *extra: str) -> list[str]:
    return ["--executor", "dask", "--scheduler", cluster.scheduler_address, *extra]


def job_events(client: Any, job_id: str) -> list[dict[str, Any]]:
    """What the job's tasks reported on its topic (the scheduler keeps recent events)."""
    return [msg for _, msg in client.get_events(f"parallelsync-{job_id}")]


def advisory_waiters(conn: psycopg.Connection[Any]) -> list[int]:
    """Backends waiting for the test's advisory lock: a range's COPY held by block_first_range."""
    rows = conn.execute(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND objid = %s AND NOT granted",
        (RANGE_LOCK,),
    ).fetchall()
    return [int(r[0]) for r in rows]


# ---------------------------------------------------------------- every field equal
def test_dask_copy_equals_table_for_every_type(
    cluster: Any,
    client: Any,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute(ALL_TYPES_DDL)
    fill_all_types(pg_conn, 400)
    pg_conn.execute("ANALYZE all_types")
    run = run_cli(
        *copy_args(pg_dsn, "all_types", mongo_uri, mongo_db.name, "--workers", "2",
                   "--verify", "checksum", "--json", *dask_args(cluster))
    )  # fmt: skip
    assert run.rc == 0, run.stderr
    out = run.json
    assert out["status"] == "FINISHED" and out["rows"] == 400 and out["docs"] == 400
    docs = {d["_id"]: d for d in mongo_db.get_collection("all_types", codec_options=CODEC).find()}
    assert docs[3]["ip"] == "10.0.3.1"
    pg_conn.execute("ALTER TABLE all_types DROP COLUMN ip")
    mongo_db.all_types.update_many({}, {"$unset": {"ip": ""}})
    assert assert_collection_equals_table(pg_conn, mongo_db, "all_types", "all_types") == 400
    assert no_temp_collections(mongo_db)
    # Every range ran as a task on the cluster's workers, once, and reported its progress there.
    events = job_events(client, out["job_id"])
    started = [e for e in events if e["kind"] == "started"]
    assert {e["range"] for e in started} == set(range(out["ranges"]))
    assert {e["worker"] for e in started} <= set(client.scheduler_info()["workers"])
    assert sum(e["rows"] for e in events if e["kind"] == "progress") == 400
    assert sum(1 for e in events if e["kind"] == "ended") == len(started)
    job = mongo_db.parallelsync_jobs.find_one({"_id": out["job_id"]})
    assert job is not None and all(r["attempts"] == 1 for r in job["ranges"])


# ---------------------------------------------------------------- one snapshot on every host
def test_dask_ranges_read_one_snapshot_under_concurrent_transfers(
    cluster: Any, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    """Money moves between accounts during the copy; the copy must still sum to the total."""
    n, total = 4000, 4000 * 1000
    pg_conn.execute("CREATE TABLE accounts (id int4 PRIMARY KEY, balance int8 NOT NULL)")
    pg_conn.execute(f"INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {n}) g")
    pg_conn.execute("ANALYZE accounts")
    stop = threading.Event()
    transfers = [0]

    def transfer() -> None:
        import random

        rnd = random.Random(7)
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
        # Transfers under way before the snapshot, and going on while the ranges are copied.
        wait_for(lambda: transfers[0] > 10, "the first transfers")
        run = run_cli(
            *copy_args(pg_dsn, "accounts", mongo_uri, mongo_db.name, "--workers", "2",
                       "--ranges-per-worker", "4", "--batch-rows", "200", "--json",
                       *dask_args(cluster))
        )  # fmt: skip
        during = transfers[0]
    finally:
        stop.set()
        thread.join()
    assert run.rc == 0, run.stderr
    assert during > 20, "the transfers did not overlap the copy"
    agg = list(
        mongo_db.accounts.aggregate(
            [{"$group": {"_id": None, "s": {"$sum": "$balance"}, "c": {"$sum": 1}}}]
        )
    )
    assert agg[0]["c"] == n
    assert agg[0]["s"] == total
    assert run.json["ranges"] == 8


# ---------------------------------------------------------------- a worker lost mid-range
def test_a_dask_worker_killed_mid_range_is_retried_under_the_same_snapshot(
    cluster: Any,
    client: Any,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],  # noqa: F811
) -> None:
    make_table(pg_conn)
    with psycopg.connect(pg_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (RANGE_LOCK,))
        cli = Cli(
            *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--workers", "2",
                       "--batch-rows", "50", "--lock-timeout-seconds", "0", "--json",
                       *dask_args(cluster)),
            env=BLOCK_FIRST,
        )  # fmt: skip
        cli_runs.append(cli)
        # The first range's COPY waits for the lock; every other range finishes meanwhile.
        first = wait_for(lambda: advisory_waiters(pg_conn), "the first range's COPY", proc=cli)

        def all_but_one_done() -> dict[str, Any] | None:
            job = mongo_db.parallelsync_jobs.find_one({"status": "RUNNING"})
            if job is None or not job.get("ranges"):
                return None
            left = [r for r in job["ranges"] if r["status"] != "DONE"]
            return job if len(left) == 1 else None

        job = wait_for(all_but_one_done, "every range but the held one", proc=cli)
        held = next(r["id"] for r in job["ranges"] if r["status"] != "DONE")
        key = f"parallelsync-{job['_id']}-range-{held}-attempt-1"
        where = wait_for(
            lambda: [a for a, keys in client.processing().items() if key in keys],
            "the held range's Dask worker",
        )[0]
        pid = client.run(os.getpid, workers=[where])[where]
        os.kill(pid, signal.SIGKILL)
        # The coordinator counts the lost attempt and sends the range again under a new key:
        # its new COPY waits for the lock too (another backend: the old one died with it).
        retry = f"parallelsync-{job['_id']}-range-{held}-attempt-2"
        wait_for(
            lambda: any(retry in keys for keys in client.processing().values()),
            "the second attempt",
            proc=cli,
        )
        wait_for(
            lambda: [p for p in advisory_waiters(pg_conn) if p not in first],
            "the second attempt's COPY",
            proc=cli,
        )
        holder.execute("SELECT pg_advisory_unlock(%s)", (RANGE_LOCK,))
    run = cli.wait()
    done = finished_job(mongo_db, run)
    attempts = {r["id"]: r["attempts"] for r in done["ranges"]}
    assert attempts[held] == 2 and all(a == 1 for r, a in attempts.items() if r != held)
    rows = pg_conn.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()
    docs = [(d["_id"], d["name"], d["qty"]) for d in mongo_db.items.find({}, {"price": 0})]
    assert sorted(docs) == [tuple(r) for r in rows]
    assert no_temp_collections(mongo_db)
    assert "Dask worker" in run.stderr and f"range {held}: attempt 1 failed" in run.stderr


# ---------------------------------------------------------------- the scheduler lost
def test_the_scheduler_lost_mid_copy_fails_cleanly_and_a_new_copy_finishes(
    cluster: Any,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    cli_runs: list[Cli],  # noqa: F811
) -> None:
    make_table(pg_conn)
    before = seed_target(mongo_db)
    doomed = local_cluster()
    try:
        with psycopg.connect(pg_dsn, autocommit=True) as holder:
            holder.execute("SELECT pg_advisory_lock(%s)", (RANGE_LOCK,))
            cli = Cli(
                *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--workers", "2",
                           "--batch-rows", "50", "--lock-timeout-seconds", "0", "--json",
                           *dask_args(doomed)),
                env=BLOCK_FIRST,
            )  # fmt: skip
            cli_runs.append(cli)
            wait_for(lambda: advisory_waiters(pg_conn), "the first range's COPY", proc=cli)
            doomed.sync(doomed.scheduler.close)  # workers lose it, and so does the coordinator
            run = cli.wait()
            holder.execute("SELECT pg_advisory_unlock(%s)", (RANGE_LOCK,))
    finally:
        # Without its scheduler, a full close waits ~30 s for workers it cannot reach any more;
        # they close themselves once they lost the scheduler.
        with contextlib.suppress(Exception):
            doomed.close(timeout=3)
    assert run.rc == 1, run.stderr
    assert "lost the Dask scheduler" in run.stderr and "the target is unchanged" in run.stderr
    assert "Traceback" not in run.stderr
    assert_target_untouched(mongo_db, before)
    assert mongo_db.parallelsync_locks.count_documents({}) == 0
    job = only_job(mongo_db)
    assert job["status"] == "FAILED" and "lost the Dask scheduler" in job["error"]
    # The failed job dropped its temp: there is nothing to resume, and a new copy finishes.
    resume = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--resume", "last"))
    assert resume.rc == 2 and "start a new copy" in resume.stderr, resume.stderr
    again = run_cli(
        *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--workers", "2", "--json",
                   *dask_args(cluster))
    )  # fmt: skip
    finished_job(mongo_db, again)
    rows = pg_conn.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()
    docs = [(d["_id"], d["name"], d["qty"]) for d in mongo_db.items.find({}, {"price": 0})]
    assert sorted(docs) == [tuple(r) for r in rows]


# ---------------------------------------------------------------- secrets
def test_the_passwords_that_travel_to_the_workers_are_shown_nowhere(
    cluster: Any,
    client: Any,
    pg_cluster: PgServer,
    pg_dsn: str,
    role: Callable[[str], None],  # noqa: F811
    mongo_user: Callable[..., str],  # noqa: F811
    mongo_db: Database[Any],
) -> None:
    """Each task carries the DSN and the URI to its worker: neither the job's output, nor its
    job document, nor the cluster's logs and events show them."""
    password, mongo_password = "pw@Secret-dask1", "m0ngo-Secret-dask2"
    role(password)
    source = uri_encoded(pg_cluster, pg_database(pg_dsn), password)
    target = mongo_user(mongo_password)
    run = run_cli(
        *copy_args(source, "src", target, mongo_db.name, "--workers", "2", "--json", "--debug",
                   *dask_args(cluster))
    )  # fmt: skip
    assert run.rc == 0, run.stderr
    assert mongo_db.src.count_documents({}) == 30
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["status"] == "FINISHED"
    logs = [str(client.get_scheduler_logs()), str(client.get_worker_logs())]
    events = str(client.get_events())
    assert "started" in events  # the job's events are there, and were looked at
    for text in [run.stdout, run.stderr, str(job), *logs, events]:
        assert_nowhere(text, password)
        assert_nowhere(text, mongo_password)


# ---------------------------------------------------------------- a cluster of its own
def test_without_a_scheduler_the_copy_runs_on_a_local_cluster_of_its_own(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_table(pg_conn, 2000)
    run = run_cli(
        *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--workers", "2", "--json",
                   "--executor", "dask")
    )  # fmt: skip
    finished_job(mongo_db, run)
    assert "started a local Dask cluster of 2 worker processes at tcp://127.0.0.1:" in run.stderr
    rows = pg_conn.execute("SELECT id, name, qty FROM items ORDER BY id").fetchall()
    docs = [(d["_id"], d["name"], d["qty"]) for d in mongo_db.items.find({}, {"price": 0})]
    assert sorted(docs) == [tuple(r) for r in rows]


# ---------------------------------------------------------------- versions
def test_a_worker_with_another_transcoder_is_refused_before_the_job_starts(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """Workers that would write other bytes (here: the reference transcoder, forced by
    PARALLELSYNC_IMPL on the worker hosts) are reported; no job, no lease, no temp."""
    make_table(pg_conn)
    with local_cluster(1, env={"PARALLELSYNC_IMPL": "python"}) as other:
        run = run_cli(
            *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--json", *dask_args(other))
        )
        worker = next(iter(other.scheduler_info["workers"]))
    assert run.rc == 2, run.stderr
    assert (
        f"Dask worker {worker} runs parallelsync 0.1.0 with the 'python' transcoder, the "
        "coordinator parallelsync 0.1.0 with 'c': install the same version on every host"
    ) in run.stderr
    assert mongo_db.parallelsync_jobs.count_documents({}) == 0
    assert mongo_db.parallelsync_locks.count_documents({}) == 0
    assert no_temp_collections(mongo_db)
