"""Replication slots a copy leaves or uses: an abandoned slot is reported (copy preflight,
`status`), listed with its retained WAL (`slot list`) and dropped with its publication
(`slot drop`); a slot something still uses is never dropped: not by `slot drop`, and not by a
refused `--resume` next to the copy that owns it (issue 10, items 11 and 12).

Copies are held at an exact point with the `before_checks` test hook (tests/hooks.py
`hold_until_released`): the job is RUNNING there, its lease held, its slot and temp in place.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.errors import LockedError
from parallelsync.targets.mongodb.lease import Lease
from tests.hooks import HOLD_DIR_ENV
from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.servers import PASSWORD_ROLE, PASSWORD_ROLE_PASSWORD, PgServer

ROWS = 6000
# Slow enough on SecantusDB that the coordinator can be killed mid-copy (see test_faults.py).
SLOW = ["--batch-rows", "10", "--workers", "2"]
HOLD = {"PARALLELSYNC_TEST_HOOKS": "before_checks=tests.hooks:hold_until_released"}
# Generous: the machine is shared; a state that never comes fails the test, it does not hang.
DEADLINE_S = 240.0

T = TypeVar("T")


class Copy:
    """The CLI in the background, in its own process group (SIGKILL reaches its workers)."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        full = {k: v for k, v in os.environ.items() if not k.startswith(("PARALLELSYNC_", "SLOT"))}
        full.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "parallelsync", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=full, start_new_session=True,
        )  # fmt: skip

    def wait(self, timeout: float = DEADLINE_S) -> Run:
        out, err = self.proc.communicate(timeout=timeout)
        return Run(self.proc.returncode, out, err)

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.communicate(timeout=30)


@pytest.fixture
def copies() -> Iterator[list[Copy]]:
    started: list[Copy] = []
    try:
        yield started
    finally:
        for c in started:
            c.kill()


def wait_for(check: Callable[[], T | None], what: str, proc: Copy | None = None) -> T:
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.proc.poll() is not None:
            pytest.fail(f"the copy ended before {what}: {proc.wait().stderr}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


def make_table(conn: psycopg.Connection[Any], rows: int = ROWS) -> None:
    conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, v text)")
    conn.execute(f"INSERT INTO items SELECT g, 'v' || g FROM generate_series(1, {rows}) g")
    conn.execute("ANALYZE items")


def slot(conn: psycopg.Connection[Any], name: str) -> dict[str, Any] | None:
    cur = conn.execute(
        "SELECT slot_name, active, confirmed_flush_lsn::text AS lsn FROM pg_replication_slots "
        "WHERE slot_name = %s",
        (name,),
    )
    row = cur.fetchone()
    return None if row is None else dict(zip(("name", "active", "lsn"), row, strict=True))


def publication(conn: psycopg.Connection[Any], name: str) -> bool:
    return (
        conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
        is not None
    )


def abandoned(conn: psycopg.Connection[Any], name: str) -> bool:
    """The slot exists, nobody reads it, and no walsender holds a snapshot for it any more."""
    row = conn.execute(
        "SELECT NOT s.active AND NOT EXISTS (SELECT 1 FROM pg_stat_activity a "
        "WHERE a.backend_type = 'walsender' AND a.application_name LIKE 'parallelsync%%') "
        "FROM pg_replication_slots s WHERE s.slot_name = %s",
        (name,),
    ).fetchone()
    return bool(row and row[0])


def running_job(db: Database[Any], min_rows: int = 0) -> dict[str, Any] | None:
    job = db.parallelsync_jobs.find_one({"status": "RUNNING"}, sort=[("started_at", -1)])
    if job and (job.get("totals") or {}).get("rows", 0) >= min_rows:
        return job
    return None


def kill_mid_copy(copy: Copy, db: Database[Any]) -> dict[str, Any]:
    """SIGKILL the whole job once it has copied some rows (it is RUNNING with its slot)."""
    job = wait_for(lambda: running_job(db, 200), "rows copied", copy)
    copy.kill()
    return job


def temps(db: Database[Any]) -> list[str]:
    return [n for n in db.list_collection_names() if "__psync_tmp_" in n]


def slot_list(dsn: str) -> list[dict[str, Any]]:
    run = run_cli("slot", "list", "--source", dsn, "--json")
    assert run.rc == 0, run.stderr
    out: list[dict[str, Any]] = json.loads(run.stdout)
    return out


def held_copy(tmp_path: Path, name: str, *args: str) -> tuple[Copy, Path]:
    hold = tmp_path / name
    hold.mkdir()
    return Copy(*args, env={**HOLD, HOLD_DIR_ENV: str(hold)}), hold


# ---------------------------------------------------------------- item 12: abandoned slots
def test_an_abandoned_slot_is_reported_listed_and_dropped(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    copies: list[Copy],
) -> None:
    make_table(pg_conn)
    dead = Copy(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--slot", "leak_a", *SLOW))
    copies.append(dead)
    job = kill_mid_copy(dead, mongo_db)
    wait_for(lambda: abandoned(pg_conn, "leak_a"), "the dead copy's slot to be left alone")
    # WAL written after the slot's restart point is what it retains.
    pg_conn.execute(
        "CREATE TABLE filler AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, 50000) g"
    )

    [leak] = [s for s in slot_list(pg_dsn) if s["name"] == "leak_a"]
    assert leak["plugin"] == "pgoutput" and leak["active"] is False and leak["held_by"] is None
    assert leak["retained_bytes"] > 4_000_000, leak  # the filler alone is ~12 MB of WAL
    assert leak["confirmed_flush_lsn"] and leak["publication"] is True
    assert leak["publication_ours"] is True
    text = run_cli("slot", "list", "--source", pg_dsn)
    [line] = [ln for ln in text.stdout.splitlines() if ln.startswith("leak_a ")]
    assert "pgoutput" in line and " no " in line and "yes (parallelsync)" in line
    assert "MB" in line

    # A fresh copy warns at preflight, takes the target over (once the dead job's lease has
    # expired: made so here instead of waiting its 60 s) and names the slot the dead job left.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    mongo_db.parallelsync_locks.update_many({}, {"$set": {"expires_at": past}})
    fresh = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--slot", "leak_b"))
    assert fresh.rc == 0, fresh.stderr
    assert "warning: slot leak_a is inactive and retains " in fresh.stderr
    assert "MB of WAL; if no consumer needs it: parallelsync slot drop leak_a --source " in (
        fresh.stderr
    )
    assert "slot leak_b is inactive" not in fresh.stderr
    assert (
        f"warning: job {job['_id']} was abandoned (its coordinator died) and is marked FAILED; "
        "it left replication slot leak_a and publication leak_a on the source"
    ) in fresh.stderr
    old = mongo_db.parallelsync_jobs.find_one({"_id": job["_id"]})
    assert old is not None and old["status"] == "FAILED" and old["abandoned_slot"] == "leak_a"
    assert mongo_db.items.count_documents({}) == ROWS and temps(mongo_db) == []

    # status names each job's slot; with --source, what the slot holds now.
    plain = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name)
    assert plain.rc == 0, plain.stderr
    assert "    slot leak_a (status --source DSN shows the WAL it retains)" in plain.stdout
    assert "    slot leak_b (status --source DSN shows the WAL it retains)" in plain.stdout
    full = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, "--source", pg_dsn)
    assert full.rc == 0, full.stderr
    lines = {ln.split(":")[0].strip(): ln for ln in full.stdout.splitlines() if "    slot " in ln}
    assert "inactive, retains" in lines["slot leak_a"]
    assert (
        "; if no consumer needs it: parallelsync slot drop leak_a --source " in lines["slot leak_a"]
    )
    # a finished job's slot is kept for change capture: no advice to drop it
    assert "inactive, retains" in lines["slot leak_b"] and "drop" not in lines["slot leak_b"]

    drop = run_cli("slot", "drop", "leak_a", "--source", pg_dsn)
    assert drop.rc == 0, drop.stderr
    assert "dropped replication slot leak_a" in drop.stdout
    assert "dropped publication leak_a" in drop.stdout
    assert slot(pg_conn, "leak_a") is None and not publication(pg_conn, "leak_a")
    assert slot(pg_conn, "leak_b") is not None and publication(pg_conn, "leak_b")
    gone = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, "--source", pg_dsn)
    assert "    slot leak_a: no longer exists on the source" in gone.stdout
    again = run_cli("slot", "drop", "leak_a", "--source", pg_dsn)
    assert (
        again.rc == 3 and "replication slot 'leak_a' does not exist on the source" in again.stderr
    )


def test_slot_drop_refuses_what_is_in_use_and_keeps_a_foreign_publication(
    pg_cluster: PgServer,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    copies: list[Copy],
) -> None:
    make_table(pg_conn, 10)
    pg_conn.execute("CREATE PUBLICATION reader FOR TABLE items")
    pg_conn.execute("SELECT pg_create_logical_replication_slot('reader', 'pgoutput')")
    if pg_cluster.bin_dir is None:
        pytest.skip("needs pg_recvlogical from the server's bin dir to hold a slot active")
    reader = subprocess.Popen(
        [str(pg_cluster.bin_dir / "pg_recvlogical"), "-d", pg_dsn, "--slot", "reader", "--start",
         "-o", "proto_version=1", "-o", "publication_names=reader", "-f", os.devnull],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: (slot(pg_conn, "reader") or {}).get("active"), "the reader to attach")
        busy = run_cli("slot", "drop", "reader", "--source", pg_dsn)
        assert busy.rc == 3, busy.stderr
        assert "replication slot 'reader' is active (used by process " in busy.stderr
        assert slot(pg_conn, "reader") is not None and publication(pg_conn, "reader")
        [entry] = [s for s in slot_list(pg_dsn) if s["name"] == "reader"]
        assert entry["active"] is True and entry["active_pid"]
    finally:
        reader.terminate()
        reader.communicate(timeout=30)
    wait_for(lambda: not (slot(pg_conn, "reader") or {"active": True})["active"], "detach")
    # Now inactive: dropped, but a publication parallelsync did not create is not ours to drop.
    drop = run_cli("slot", "drop", "reader", "--source", pg_dsn)
    assert drop.rc == 0, drop.stderr
    assert "dropped replication slot reader" in drop.stdout
    assert "kept publication reader: parallelsync did not create it" in drop.stdout
    assert slot(pg_conn, "reader") is None and publication(pg_conn, "reader")
    bad = run_cli("slot", "drop", "Bad-Name", "--source", pg_dsn)
    assert bad.rc == 2 and "invalid slot name 'Bad-Name'" in bad.stderr


def test_slot_list_needs_no_privilege_and_drop_needs_replication(
    pg_cluster: PgServer, pg_conn: psycopg.Connection[Any], pg_dsn: str
) -> None:
    pg_conn.execute("SELECT pg_create_logical_replication_slot('orphan', 'pgoutput')")
    plain = pg_cluster.dsn(
        pg_dsn.rsplit("/", 1)[1], user=PASSWORD_ROLE, password=PASSWORD_ROLE_PASSWORD
    )
    assert [s["name"] for s in slot_list(plain)] == ["orphan"]
    refused = run_cli("slot", "drop", "orphan", "--source", plain)
    assert refused.rc == 3, refused.stderr
    assert "dropping replication slot 'orphan' needs the REPLICATION attribute or superuser" in (
        refused.stderr
    )
    assert PASSWORD_ROLE_PASSWORD not in refused.stderr
    assert slot(pg_conn, "orphan") is not None


# ---------------------------------------------------------------- item 11: refused resumes
def test_a_refused_resume_next_to_a_running_copy_keeps_its_slot(
    tmp_path: Path,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    copies: list[Copy],
) -> None:
    """A mistaken `--resume last --slot s1` next to the running `--slot s1` copy: refused
    (exit 5) and nothing of the running copy's is touched; `slot drop s1` is refused too (the
    slot shows as inactive while the copy holds its snapshot); the copy finishes with its slot."""
    make_table(pg_conn, 500)
    args = copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--slot", "s1")
    running, hold = held_copy(tmp_path, "running", *args, "--json")
    copies.append(running)
    wait_for(lambda: (hold / "reached").exists(), "the copy to reach the hold", running)
    job = running_job(mongo_db)
    assert job is not None

    refused = run_cli(*args, "--resume", "last")
    assert refused.rc == 5, refused.stderr
    assert f"job {job['_id']} still holds the target lease on this host" in refused.stderr
    assert "slot s1 is inactive" not in refused.stderr  # a live copy's slot is not reported
    assert slot(pg_conn, "s1") is not None and publication(pg_conn, "s1")
    assert temps(mongo_db) == [job["target"]["temp"]]
    [entry] = [s for s in slot_list(pg_dsn) if s["name"] == "s1"]
    assert entry["active"] is False and entry["held_by"]
    drop = run_cli("slot", "drop", "s1", "--source", pg_dsn)
    assert drop.rc == 3 and "replication slot 's1' belongs to a running copy" in drop.stderr
    assert slot(pg_conn, "s1") is not None and publication(pg_conn, "s1")

    (hold / "release").touch()
    done = running.wait()
    assert done.rc == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["status"] == "FINISHED" and out["slot"] == "s1"
    s1 = slot(pg_conn, "s1")
    assert s1 is not None and s1["lsn"] == out["consistent_lsn"] and publication(pg_conn, "s1")
    assert mongo_db.items.count_documents({}) == 500 and temps(mongo_db) == []


def test_of_two_resumes_of_a_dead_job_the_refused_one_leaves_the_live_one_intact(
    tmp_path: Path,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    copies: list[Copy],
) -> None:
    make_table(pg_conn)
    args = copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--slot", "s2", *SLOW)
    dead = Copy(*args)
    copies.append(dead)
    job = kill_mid_copy(dead, mongo_db)
    wait_for(lambda: abandoned(pg_conn, "s2"), "the dead copy's slot to be left alone")
    pg_conn.execute("UPDATE items SET v = 'changed' WHERE id % 50 = 0")

    live, hold = held_copy(tmp_path, "live", *args, "--resume", "last", "--json")
    copies.append(live)
    wait_for(lambda: (hold / "reached").exists(), "the first resume to reach the hold", live)
    refused = run_cli(*args, "--resume", "last")
    assert refused.rc == 5, refused.stderr
    assert f"job {job['_id']} still holds the target lease on this host" in refused.stderr
    assert slot(pg_conn, "s2") is not None and publication(pg_conn, "s2")
    assert temps(mongo_db) == [job["target"]["temp"]]

    (hold / "release").touch()
    done = live.wait()
    assert done.rc == 0, done.stderr
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["status"] == "FINISHED" and out["job_id"] == job["_id"]
    assert mongo_db.items.count_documents({}) == ROWS
    assert mongo_db.items.count_documents({"v": "changed"}) == ROWS // 50
    s2 = slot(pg_conn, "s2")
    assert s2 is not None and s2["lsn"] == out["consistent_lsn"]
    final = mongo_db.parallelsync_jobs.find_one({"_id": job["_id"]})
    assert final is not None and final["status"] == "FINISHED" and final["resumes"] == 1


def test_two_resumes_racing_past_the_owner_check_take_the_lease_once(
    mongo_db: Database[Any],
) -> None:
    """Both resumes see the dead owner before either takes the lease: only the first gets it
    (it must match the dead owner's token), the second is refused."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    coll = mongo_db.parallelsync_locks
    ns, job_id = f"{mongo_db.name}.items", "20260101T000000_dead01"
    now = dt.datetime.now(dt.UTC)
    coll.insert_one(
        {"_id": ns, "job_id": job_id, "owner": f"{socket.gethostname()}:{gone.stdout.strip()}",
         "token": 7, "expires_at": now + dt.timedelta(seconds=60)}
    )  # fmt: skip
    first, second = Lease(coll, ns, job_id), Lease(coll, ns, job_id)
    seen = [first.dead_owner_token(now), second.dead_owner_token(now)]
    assert seen == [7, 7]
    assert first.take(now, 60, mine={"job_id": job_id, "token": 7}) == 8
    with pytest.raises(LockedError, match=f"is locked by job {job_id}"):
        second.take(now, 60, mine={"job_id": job_id, "token": 7})
    lease = coll.find_one({"_id": ns})
    assert lease is not None and lease["token"] == 8
    assert first.renew() and not second.renew()
