"""Functions the job calls at its test hooks (parallelsync/job/hooks.py) in fault tests."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
from pymongo import MongoClient


def announce(path: Path, text: str) -> None:
    """Create `path` holding `text`, all at once. The tests poll for the file and read it as
    soon as it exists; `write_text` creates it empty first, so a test on a busy machine read ""
    and killed the job before the text was there. A rename is atomic: the file is whole or not
    there."""
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def alter_one_document(target_uri: str, db: str, temp: str, **_: Any) -> None:
    """Change one document in the temp collection between the copy and the checks."""
    client: MongoClient[dict[str, Any]] = MongoClient(target_uri)
    try:
        coll = client[db][temp]
        doc = coll.find_one(sort=[("_id", 1)])
        assert doc is not None, "the temp collection is empty"
        coll.update_one({"_id": doc["_id"]}, {"$set": {"altered": True}})
    finally:
        client.close()


# Where `hold_the_job` announces that it holds the job, and after how many rows it does.
HOLD_MARKER = "PSYNC_TEST_HOLD_MARKER"
HOLD_ROWS = "PSYNC_TEST_HOLD_ROWS"


def hold_the_job(rows: int, done: int, **_: Any) -> None:
    """Once a range is finished and recorded with HOLD_ROWS rows copied, stop the coordinator
    right there (it waits here until it is killed) and say so by creating HOLD_MARKER: a fault
    test kills it at that known state instead of racing a copy that may already have finished."""
    if rows < int(os.environ.get(HOLD_ROWS, "1")):
        return
    announce(Path(os.environ[HOLD_MARKER]), str(os.getpid()))
    while True:
        time.sleep(1)


# Where `try_truncate` reports what happened (the hook runs in the coordinator process).
HOOK_OUT_ENV = "PARALLELSYNC_TEST_HOOK_OUT"


def _ddl(source: str, statement: str) -> None:
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute(statement)


def truncate_table(source: str, table: str, **_: Any) -> None:
    """TRUNCATE the table between the snapshot export and the guard (not MVCC-safe)."""
    _ddl(source, f"TRUNCATE {table}")


def truncate_base(source: str, **_: Any) -> None:
    """TRUNCATE the table `base` (under a view being copied) after the snapshot export."""
    _ddl(source, "TRUNCATE base")


def refresh_mv(source: str, **_: Any) -> None:
    """REFRESH MATERIALIZED VIEW mv (a new file, like TRUNCATE) after the snapshot export."""
    _ddl(source, "REFRESH MATERIALIZED VIEW mv")


def rewrite_table(source: str, table: str, **_: Any) -> None:
    """A rewriting ALTER (new relfilenode) between the snapshot export and the guard."""
    _ddl(source, f"ALTER TABLE {table} ALTER COLUMN v TYPE int8")


def try_truncate(source: str, table: str, **_: Any) -> None:
    """Try to TRUNCATE while the copy holds the table; write "blocked" or "truncated" to the
    file $PARALLELSYNC_TEST_HOOK_OUT. A short lock_timeout, so the TRUNCATE gives up instead of
    queueing (a queued ACCESS EXCLUSIVE would hold up the workers' own locks)."""
    outcome = "truncated"
    with psycopg.connect(source, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '300ms'")
        try:
            conn.execute(f"TRUNCATE {table}")
        except psycopg.errors.LockNotAvailable:
            outcome = "blocked"
    announce(Path(os.environ[HOOK_OUT_ENV]), outcome)


def skip_first_range(states: list[Any], **_: Any) -> None:
    """Make the first range read nothing: rows read and documents then agree with each other, and
    only a count of the snapshot itself can tell that rows are missing."""
    st = min(states, key=lambda s: s.rng.id)
    st.query = st.query.replace(") TO STDOUT", " AND false) TO STDOUT")


# A directory the test and the held job share: the job writes `reached` when it gets to the hook
# and waits there until the test creates `release`.
HOLD_DIR_ENV = "PARALLELSYNC_TEST_HOLD_DIR"
# Generous: a test that never releases the job must fail, not hang the suite.
HOLD_DEADLINE_S = 600.0


def hold_until_released(**_: Any) -> None:
    """Keep the job at this point (lease held, slot and temp in place) until the test says go."""
    directory = Path(os.environ[HOLD_DIR_ENV])
    announce(directory / "reached", str(os.getpid()))
    deadline = time.monotonic() + HOLD_DEADLINE_S
    while not (directory / "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test never released the job held at {directory}")
        time.sleep(0.05)


SQL_ENV = "PSYNC_TEST_SQL"  # statements to run, separated by ";"
SQL_DSN_ENV = "PSYNC_TEST_SQL_DSN"  # as whom (default: the copy's own source DSN)


def run_sql(source: str, **_: Any) -> None:
    """Change the source after the snapshot (before_workers): rows the copy does not see, which
    the slot records. Runs in one transaction, so a test can change two tables in one."""
    with psycopg.connect(os.environ.get(SQL_DSN_ENV) or source, autocommit=False) as conn:
        for statement in os.environ[SQL_ENV].split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.commit()


def run_sql_each(source: str, **_: Any) -> None:
    """As run_sql, but each statement in a transaction of its own."""
    with psycopg.connect(os.environ.get(SQL_DSN_ENV) or source, autocommit=True) as conn:
        for statement in os.environ[SQL_ENV].split(";"):
            if statement.strip():
                conn.execute(statement)


def terminate_self(**_: Any) -> None:
    """SIGTERM to this very process, as a user's `kill PID` at this point (once)."""
    if not os.environ.get("PSYNC_TEST_TERMINATED"):
        os.environ["PSYNC_TEST_TERMINATED"] = "1"
        os.kill(os.getpid(), signal.SIGTERM)


# The advisory lock that `block_first_range` makes a range wait for; the test holds it.
RANGE_LOCK = 4242


def block_first_range(states: list[Any], **_: Any) -> None:
    """Make the first range's COPY wait for an advisory lock the test holds, so its worker stays
    copying that range (0 rows so far) until the test lets go: a known state to look at,
    instead of racing a copy that may already have finished. Needs --lock-timeout-seconds 0."""
    st = min(states, key=lambda s: s.rng.id)
    wait = f"(SELECT true FROM (SELECT pg_advisory_xact_lock_shared({RANGE_LOCK})) s)"
    st.query = st.query.replace(") TO STDOUT", f" AND {wait}) TO STDOUT")


# The fault `rename_fault` injects at the swap (before_swap): see its docstring.
RENAME_FAULT_ENV = "PSYNC_TEST_RENAME_FAULT"
# The application name of the copy's own clients (`?appName=` in its URI): the fail points fire
# only for them, so the hook's and the test's clients keep working.
RENAME_FAULT_APP = "psync_rename_fault"


def _fail(client: MongoClient[Any], commands: list[str], **data: Any) -> None:
    client.admin.command(
        {
            "configureFailPoint": "failCommand",
            "mode": "alwaysOn",
            "data": {"failCommands": commands, "appName": RENAME_FAULT_APP, **data},
        }
    )


def rename_fault(target_uri: str, db: str, temp: str, collection: str, **_: Any) -> None:
    """Just before the copy's rename, make its answer get lost ($PSYNC_TEST_RENAME_FAULT):

    close    the connection drops before the server runs the rename (it never happens)
    done     the server renames (done here, as the server would) and the answer is lost
    unknown  as `done`, and every look afterwards (listCollections, drop) fails as well
    hang     the server holds the rename for 6 s before running it, past the copy's bound
    """
    mode = os.environ[RENAME_FAULT_ENV]
    client: MongoClient[Any] = MongoClient(target_uri, appname="psync_test_hook")
    try:
        if mode in ("done", "unknown"):
            client.admin.command(
                "renameCollection", f"{db}.{temp}", to=f"{db}.{collection}", dropTarget=True
            )
        if mode == "hang":
            _fail(client, ["renameCollection"], blockConnection=True, blockTimeMS=6000)
        else:
            _fail(client, ["renameCollection"], closeConnection=True)
        if mode == "unknown":
            _fail(client, ["renameCollection", "listCollections", "drop"], closeConnection=True)
    finally:
        client.close()


# `hold_follow`: which checkpoint of the run to hold at (1 = the first; a checkpoint covers
# one transaction or a group of them, group commit).
HOLD_TXN_ENV = "PSYNC_TEST_HOLD_TXN"
_checkpoints = 0  # this process's checkpoints of transactions (not idle positions) so far


def hold_follow(lsn: str, transactions: int, idle: bool = False, **_: Any) -> None:
    """At a follow checkpoint step (follow_applied, follow_stored) of the run's
    $PSYNC_TEST_HOLD_TXN-th checkpoint, write its LSN to $PSYNC_TEST_HOLD_MARKER and wait
    there until the test kills the process: a crash exactly between two steps, not a race."""
    global _checkpoints
    if idle:
        return
    _checkpoints += 1
    if _checkpoints != int(os.environ.get(HOLD_TXN_ENV, "1")):
        return
    announce(Path(os.environ[HOLD_MARKER]), lsn)
    deadline = time.monotonic() + HOLD_DEADLINE_S
    while time.monotonic() < deadline:
        time.sleep(0.05)
    raise RuntimeError("the test never killed the follow held at its checkpoint")
