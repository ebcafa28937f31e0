"""Progress while a job runs, every phase named: a live display on a terminal (a pseudo-terminal
here), plain lines on a pipe, JSON events, nothing with --quiet; the summary per phase."""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from pymongo.database import Database

from tests.hooks import HOLD_DIR_ENV, RANGE_LOCK
from tests.integration.cli_helpers import copy_args, run_cli

ROWS = 3000
# A copy with --verify checksum runs every phase of a new job, in this order.
COPY_PHASES = ["preflight", "snapshot", "plan", "copy", "count", "checksums", "indexes", "swap"]
VERIFY_PHASES = ["preflight", "snapshot", "plan", "read", "compare"]
# The job waits at the first finished range until the test has seen what it looks for.
HOLD_AT_RANGE = {"PARALLELSYNC_TEST_HOOKS": "range_done=tests.hooks:hold_until_released"}
DEADLINE_S = 120.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][0-9A-B]|\r")


def make_table(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, name text, price numeric)")
    conn.execute(
        f"INSERT INTO items SELECT g, 'item ' || g, g * 1.5 FROM generate_series(1, {ROWS}) g"
    )
    conn.execute("ANALYZE items")


def args(pg_dsn: str, mongo_uri: str, db: str, *extra: str) -> list[str]:
    return copy_args(
        pg_dsn, "items", mongo_uri, db, "--workers", "2", "--verify", "checksum", *extra
    )


def phase_events(lines: list[str]) -> list[tuple[str, str]]:
    """(phase, started|done) in the order the plain lines name them."""
    out = []
    for ln in lines:
        m = re.fullmatch(r"\[([a-z-]+)\] (started|done in [0-9.]+ s)", ln)
        if m:
            out.append((m[1], m[2].split(" ")[0]))
    return out


def in_order(phases: list[str]) -> list[tuple[str, str]]:
    return [(p, s) for p in phases for s in ("started", "done")]


def test_plain_lines_name_each_phase_in_order_and_show_progress(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    make_table(pg_conn)
    env = {**HOLD_AT_RANGE, HOLD_DIR_ENV: str(tmp_path)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync",
         *args(pg_dsn, mongo_uri, mongo_db.name, "--progress-seconds", "0.05")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")} | env,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        # While the job is held inside the copy, the periodic line keeps naming the phase with
        # its totals: wait for two of them, then let the job go on.
        while sum(ln.startswith("[copy] ") and " rows, " in ln for ln in seen) < 2:
            line = proc.stderr.readline()
            assert line, f"stderr ended early:\n{''.join(seen)}"
            seen.append(line.rstrip("\n"))
        (tmp_path / "release").write_text("go")
        out, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = seen + err.splitlines()
    assert proc.returncode == 0, "\n".join(lines)
    assert phase_events(lines) == in_order(COPY_PHASES), "\n".join(lines)
    copy_lines = [ln for ln in lines if ln.startswith("[copy] ") and " rows, " in ln]
    # The last one, written as the copy ends, has the final totals.
    assert copy_lines[-1].startswith(f"[copy] {ROWS / 1000:.1f}k rows, ~100% of ~"), copy_lines
    assert "rows/s" in copy_lines[-1] and "MB/s" in copy_lines[-1]
    assert re.search(r"ranges (\d+)/\1, ", copy_lines[-1]), copy_lines[-1]
    assert "workers " in copy_lines[0] and "elapsed 0:00:" in copy_lines[0]
    # The summary: the old block, then a table per phase and the slowest ranges.
    assert "  status            FINISHED" in lines
    header = next(i for i, ln in enumerate(lines) if ln.split()[:2] == ["phase", "seconds"])
    table = [ln.split() for ln in lines[header + 1 : header + 1 + len(COPY_PHASES)]]
    assert [row[0] for row in table] == COPY_PHASES
    copy_row = table[COPY_PHASES.index("copy")]
    assert copy_row[2] == f"{ROWS:,}", copy_row
    assert any(ln.strip() == "slowest ranges:" for ln in lines)
    assert mongo_db.items.count_documents({}) == ROWS
    assert out == ""


def test_a_long_phase_after_the_copy_is_not_silent(
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
    tmp_path: Path,
) -> None:
    """Held at the start of the checks, the job still says every interval which phase it is in."""
    make_table(pg_conn)
    env = {
        "PARALLELSYNC_TEST_HOOKS": "before_checks=tests.hooks:hold_until_released",
        HOLD_DIR_ENV: str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallelsync",
         *args(pg_dsn, mongo_uri, mongo_db.name, "--progress-seconds", "0.05")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")} | env,
    )  # fmt: skip
    assert proc.stderr is not None
    seen: list[str] = []
    try:
        while sum(ln.startswith("[count] running, elapsed ") for ln in seen) < 2:
            line = proc.stderr.readline()
            assert line, f"stderr ended early:\n{''.join(seen)}"
            seen.append(line.rstrip("\n"))
        (tmp_path / "release").write_text("go")
        _, err = proc.communicate(timeout=DEADLINE_S)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert "[count] started" in seen and "[count] done in" in err


def read_pty_until(master: int, proc: subprocess.Popen[bytes], done: Any) -> str:
    """What the job wrote to the terminal, read until `done(text)` holds or the job ends."""
    buf = b""
    deadline = time.monotonic() + DEADLINE_S
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: every writer closed the terminal
                break
            if not chunk:
                break
            buf += chunk
            if done(ANSI.sub("", buf.decode(errors="replace"))):
                break
        elif proc.poll() is not None and not ready:
            break
    return ANSI.sub("", buf.decode(errors="replace"))


def test_a_terminal_gets_the_live_display(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_table(pg_conn)
    master, slave = os.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")}
    env |= {"PARALLELSYNC_TEST_HOOKS": "before_workers=tests.hooks:block_first_range",
            "TERM": "xterm-256color", "COLUMNS": "160"}  # fmt: skip
    # Range 0 waits for this lock: its worker shows as copying it until the test lets go.
    with psycopg.connect(pg_dsn, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (RANGE_LOCK,))
        proc = subprocess.Popen(
            [sys.executable, "-m", "parallelsync",
             *args(pg_dsn, mongo_uri, mongo_db.name, "--lock-timeout-seconds", "0")],
            stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL, env=env,
        )  # fmt: skip
        os.close(slave)
        try:
            live = read_pty_until(
                master, proc, lambda t: re.search(r"worker \d+\s+range 0\s+0 rows\s+copying", t)
            )
            holder.execute("SELECT pg_advisory_unlock(%s)", (RANGE_LOCK,))
            rest = read_pty_until(master, proc, lambda t: False)
            proc.wait(timeout=DEADLINE_S)
        finally:
            os.close(master)
            if proc.poll() is None:
                proc.kill()
    text = live + rest
    assert proc.returncode == 0, text
    # The live area: the phase with its elapsed time, the totals, one line per worker.
    assert re.search(r"worker \d+\s+range 0\s+0 rows\s+copying", live), live
    assert re.search(r"copy\s+0:00:\d\d", live), live
    assert "rows/s" in live and "MB/s" in live and re.search(r"ranges \d/8", live), live
    # Each finished phase stays on the terminal as one line, in order.
    done = re.findall(r"✓ ([a-z-]+) done in [0-9.]+ s", text)
    assert done == COPY_PHASES, text
    assert "status            FINISHED" in text
    assert mongo_db.items.count_documents({}) == ROWS


def test_log_format_json_is_one_event_per_line(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_table(pg_conn)
    run = run_cli(
        *args(pg_dsn, mongo_uri, mongo_db.name, "--log-format", "json", "--progress-seconds",
              "0.01", "-v", "--json")
    )  # fmt: skip
    assert run.rc == 0, run.stderr
    events = [json.loads(ln) for ln in run.stderr.splitlines()]  # every line is JSON
    assert all({"time", "event"} <= set(e) for e in events)
    phases = [
        (e["phase"], e["state"])
        for e in events
        if e["event"] == "phase" and e["state"] != "running"
    ]
    assert phases == in_order(COPY_PHASES)
    for e in events:
        if e["event"] == "phase":
            assert isinstance(e["elapsed"], float) and e["elapsed"] >= 0
    progress = [e for e in events if e["event"] == "progress"]
    assert progress, events
    last = progress[-1]
    assert last["phase"] == "copy" and last["rows"] == ROWS and last["bytes"] > 0
    assert last["ranges_done"] == last["ranges"] > 1
    assert {"estimated_rows", "rows_per_second", "mb_per_second", "eta_seconds", "elapsed"} <= set(
        last
    )
    assert {"worker", "state", "range", "rows"} == set(last["workers"][0])
    debug = [e["message"] for e in events if e["event"] == "debug"]
    assert len(debug) == last["ranges"] and all(re.match(r"range \d+ done: ", m) for m in debug)
    [summary] = [e for e in events if e["event"] == "summary"]
    assert summary["status"] == "FINISHED" and summary["rows"] == ROWS
    assert [p["name"] for p in summary["phases"]] == COPY_PHASES
    assert run.json["phases"] == summary["phases"]


def test_json_summary_has_the_phases_and_the_slowest_ranges(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_table(pg_conn)
    run = run_cli(*args(pg_dsn, mongo_uri, mongo_db.name, "--quiet", "--json"))
    assert run.rc == 0, run.stderr
    out = run.json
    phases = {p["name"]: p for p in out["phases"]}
    assert list(phases) == COPY_PHASES
    assert all(p["seconds"] >= 0 and p["state"] == "done" for p in out["phases"])
    assert phases["copy"]["rows"] == ROWS and phases["copy"]["bytes"] == out["bytes"] > 0
    assert phases["copy"]["rows_per_second"] > 0
    assert phases["count"]["rows"] == ROWS and phases["checksums"]["rows"] == ROWS
    assert sum(p["seconds"] for p in out["phases"]) <= out["seconds"]
    slowest = out["slowest_ranges"]
    assert 1 <= len(slowest) <= 5
    assert [s["seconds"] for s in slowest] == sorted((s["seconds"] for s in slowest), reverse=True)
    assert all(s["rows"] > 0 and s["attempts"] == 1 for s in slowest)
    # --quiet: no progress or phase lines, but the summary is there.
    assert not [ln for ln in run.stderr.splitlines() if ln.startswith("[")], run.stderr
    assert "  status            FINISHED" in run.stderr.splitlines()
    assert re.search(r"^  copy\s+[\d.]+\s+3,000 ", run.stderr, re.M), run.stderr
    # The job document keeps the phases, and `status` shows them.
    job = mongo_db.parallelsync_jobs.find_one({"_id": out["job_id"]})
    assert job is not None and [p["name"] for p in job["phases"]] == COPY_PHASES
    status = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name)
    assert status.rc == 0, status.stderr
    assert re.search(
        r"phases: preflight [\d.]+ s, snapshot [\d.]+ s, .*swap [\d.]+ s", status.stdout
    )


def test_verify_names_its_phases(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_table(pg_conn)
    assert run_cli(*args(pg_dsn, mongo_uri, mongo_db.name, "--quiet")).rc == 0
    src = ["--source", pg_dsn, "--table", "items", "--target", mongo_uri, "--db", mongo_db.name]
    run = run_cli("verify", *src, "--progress-seconds", "0")
    assert run.rc == 0, run.stderr
    lines = run.stderr.splitlines()
    assert phase_events(lines) == in_order(VERIFY_PHASES), run.stderr
    assert run.stdout.startswith("EQUAL: public.items")
    quiet = run_cli("verify", *src, "--quiet", "--json")
    assert quiet.rc == 0 and [p["name"] for p in quiet.json["phases"]] == VERIFY_PHASES
    assert quiet.json["phases"][VERIFY_PHASES.index("read")]["rows"] == ROWS
    assert not [ln for ln in quiet.stderr.splitlines() if ln.startswith("[")]
