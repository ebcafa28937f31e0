"""Warnings logged by the package (a fallback of the transcoder) follow --log-format, in the
coordinator and in its workers: JSON events in a JSON stream, one warning, not one per process."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psycopg
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli

# Makes the compiled transcoder unimportable in every process (coordinator, fork server,
# workers), as on a machine where the extension could not be built.
BLOCK = "import sys\nsys.modules['parallelsync.transcode._kernel'] = None\n"
WARNING = "the compiled transcoder is not available"


def _blocked_env(tmp_path: Path) -> dict[str, str]:
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(BLOCK)
    return {"PYTHONPATH": str(site)}


def _table(conn: psycopg.Connection[Any]) -> None:
    conn.execute("DROP TABLE IF EXISTS logged")
    conn.execute("CREATE TABLE logged (id int PRIMARY KEY, v text)")
    conn.execute("INSERT INTO logged SELECT g, 'v' || g FROM generate_series(1, 500) g")


def test_a_fallback_warning_is_a_json_event_under_log_format_json(
    tmp_path: Path, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    _table(pg_conn)
    run = run_cli(
        *copy_args(pg_dsn, "logged", mongo_uri, mongo_db.name, "--workers", "2",
                   "--log-format", "json"),
        env=_blocked_env(tmp_path),
    )  # fmt: skip
    assert run.rc == 0, run.stderr
    lines = run.stderr.splitlines()
    assert lines
    events = [json.loads(line) for line in lines]  # every line is an event: none is bare text
    warnings = [e for e in events if e["event"] == "warning" and WARNING in e["message"]]
    assert len(warnings) == 1, lines
    assert warnings[0]["logger"] == "parallelsync.transcode"
    assert mongo_db.logged.count_documents({}) == 500
    job = mongo_db.parallelsync_jobs.find_one()
    assert job is not None and job["status"] == "FINISHED"


def test_a_fallback_warning_is_said_once_in_text(
    tmp_path: Path, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    _table(pg_conn)
    run = run_cli(
        *copy_args(pg_dsn, "logged", mongo_uri, mongo_db.name, "--workers", "2"),
        env=_blocked_env(tmp_path),
    )
    assert run.rc == 0, run.stderr
    said = [ln for ln in run.stderr.splitlines() if WARNING in ln]
    assert len(said) == 1, run.stderr
    assert said[0].startswith("parallelsync: warning: " + WARNING)
    assert mongo_db.logged.count_documents({}) == 500
