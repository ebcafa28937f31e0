"""`status`'s judgement of a RUNNING job: stale when its lease ran out or is gone, or its
coordinator's pid on this host is not running."""

from __future__ import annotations

import datetime as dt
import os
import socket
import subprocess
import sys

from parallelsync.targets.mongodb.lease import stale_reasons

NOW = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
HOST = socket.gethostname()


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def lease(job: str, owner: str, expires: dt.datetime) -> dict[str, object]:
    return {"_id": "db.c", "job_id": job, "owner": owner, "expires_at": expires}


def test_a_live_coordinator_with_a_fresh_lease_is_not_stale() -> None:
    held = lease("j", f"{HOST}:{os.getpid()}", NOW + dt.timedelta(seconds=40))
    assert stale_reasons({"_id": "j"}, held, NOW) == []


def test_an_expired_lease_and_a_dead_pid_are_both_named() -> None:
    pid = dead_pid()
    held = lease("j", f"{HOST}:{pid}", (NOW - dt.timedelta(minutes=5)).replace(tzinfo=None))
    assert stale_reasons({"_id": "j"}, held, NOW) == [
        "lease expired 5 min ago",
        f"coordinator gone (pid {pid} is not running)",
    ]


def test_no_lease_or_another_jobs_lease_uses_the_job_documents_coordinator() -> None:
    pid = dead_pid()
    job = {"_id": "j", "coordinator": {"host": HOST, "pid": pid}}
    gone = f"coordinator gone (pid {pid} is not running)"
    assert stale_reasons(job, None, NOW) == ["no lease: its coordinator is gone", gone]
    other = lease("k", f"{HOST}:{os.getpid()}", NOW + dt.timedelta(seconds=40))
    assert stale_reasons(job, other, NOW) == ["the target's lease belongs to job k", gone]


def test_a_coordinator_on_another_host_is_judged_by_its_lease_alone() -> None:
    held = lease("j", "elsewhere:1", NOW + dt.timedelta(seconds=40))
    assert stale_reasons({"_id": "j"}, held, NOW) == []
    held["expires_at"] = NOW - dt.timedelta(hours=3)
    assert stale_reasons({"_id": "j"}, held, NOW) == ["lease expired 3 h ago"]
