"""`status` marks a RUNNING job whose coordinator died as stale (issue 11 item 14): its lease
expired or is gone, or its pid on this host is not running. A live job is not."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from tests.integration.cli_helpers import Run, run_cli
from tests.integration.test_resume import make_table, start_copy


def status(mongo_uri: str, db: Database[Any], *extra: str) -> Run:
    run = run_cli("status", "--target", mongo_uri, "--db", db.name, *extra)
    assert run.rc == 0, run.stderr
    return run


def jobs_json(mongo_uri: str, db: Database[Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = json.loads(status(mongo_uri, db, "--json").stdout)
    return out


def wait_held(proc: Any, hold: Path) -> int:
    deadline = time.monotonic() + 180
    while not hold.exists():
        assert proc.poll() is None, proc.communicate()[1]
        if time.monotonic() > deadline:
            pytest.fail("the copy never reached the point where it is held")
        time.sleep(0.1)
    return int(hold.read_text())


def test_a_killed_coordinators_job_is_shown_stale(
    tmp_path: Path,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    make_table(pg_conn)
    hold = tmp_path / "held"
    proc = start_copy(pg_dsn, mongo_uri, mongo_db.name, hold=hold)
    try:
        pid = wait_held(proc, hold)
        # Alive (held at a hook, lease renewed): RUNNING, not stale.
        live = jobs_json(mongo_uri, mongo_db)
        assert [j["status"] for j in live] == ["RUNNING"]
        assert live[0]["stale"] is False and "stale_reason" not in live[0]
        text = status(mongo_uri, mongo_db).stdout
        assert "(stale:" not in text
        assert re.search(r"RUNNING .* elapsed [\d.]+ s", text) and "None" not in text, text
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    job = mongo_db.parallelsync_jobs.find_one()
    assert job is not None and job["coordinator"]["pid"] == pid
    # Killed: the lease is still within its 60 s, but its owner's pid is gone.
    gone = f"coordinator gone (pid {pid} is not running)"
    line = status(mongo_uri, mongo_db).stdout
    assert f"RUNNING (stale: {gone})" in line, line
    dead = jobs_json(mongo_uri, mongo_db)[0]
    assert dead["stale"] is True and dead["stale_reason"] == gone
    # Later: the lease has run out.
    past = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5, seconds=10)
    mongo_db.parallelsync_locks.update_one({}, {"$set": {"expires_at": past}})
    line = status(mongo_uri, mongo_db).stdout
    assert f"RUNNING (stale: lease expired 5 min ago; {gone})" in line, line
    shown = status(mongo_uri, mongo_db, "--job", str(job["_id"])).stdout
    assert '"stale": true' in shown and "lease expired 5 min ago" in shown
    # Without a lease at all (removed by hand, or taken over and released).
    mongo_db.parallelsync_locks.delete_many({})
    dead = jobs_json(mongo_uri, mongo_db)[0]
    assert dead["stale_reason"] == f"no lease: its coordinator is gone; {gone}"
