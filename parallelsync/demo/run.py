"""`parallelsync demo`: the tool's main job end to end on throwaway servers, in a minute or two.

Starts a private PostgreSQL cluster (the server binaries scripts/setup.sh installs) and a
SecantusDB server (a MongoDB-wire-compatible server from PyPI) on free ports in a temp
directory, loads a sample eSIM/KYC table, then runs the real commands a user would type — plan,
copy with a slot, status, verify — changes a few rows and shows `verify` finding them, copies
again, and cleans up. Each command is printed before it runs, so it can be pasted and tried
again; `--keep` leaves the servers running and prints their URIs (`demo --stop` stops them).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from parallelsync.demo import data
from parallelsync.errors import EXIT_OK, EXIT_VERIFY, ParallelSyncError, UsageError

DB = "shop"
SLOT = "demo_sync"
# Where `--keep` writes what `--stop` needs (server processes and directories).
STATE_FILE = Path(
    os.environ.get("PARALLELSYNC_DEMO_STATE")
    or Path(os.environ.get("TMPDIR", "/tmp")) / "parallelsync-demo.json"
)


class DemoError(ParallelSyncError):
    """A demo step did not end as it should (the message names the step)."""


@dataclass
class Demo:
    rows: int
    workers: int
    out: TextIO

    def say(self, text: str = "") -> None:
        print(text, file=self.out, flush=True)

    def run(self, *args: str, expect: int = EXIT_OK) -> subprocess.CompletedProcess[str]:
        """Run `parallelsync ARGS` as a user would, echoing the command and its output."""
        self.say(f"\n$ parallelsync {shlex.join(args)}")
        proc = subprocess.run(
            [sys.executable, "-m", "parallelsync", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("PARALLELSYNC_")},
        )
        for stream in (proc.stderr, proc.stdout):
            if stream.strip():
                self.say(stream.rstrip())
        if proc.returncode != expect:
            raise DemoError(
                f"demo step `parallelsync {args[0]}` exited {proc.returncode}, expected {expect}"
            )
        return proc


def run_demo(
    rows: int, workers: int, keep: bool, out: TextIO = sys.stdout, *, print_env: bool = False
) -> int:
    """`print_env`: the demo's own output goes to stderr and stdout gets only the `export`
    line of the kept servers, so `eval "$(parallelsync demo --keep --print-env)"` defines
    $PG and $MONGO in the user's shell."""
    from parallelsync.demo.postgres import PostgresCluster, ServerError
    from parallelsync.demo.secantus import SecantusServer

    if rows < 20:
        raise UsageError(f"--rows must be at least 20, got {rows}")
    demo = Demo(rows, workers, sys.stderr if print_env else out)
    pg, mongo = PostgresCluster(), SecantusServer()
    started = time.monotonic()
    try:
        demo.say("parallelsync demo: throwaway servers, a sample table, the real commands")
        try:
            pg.start()
            mongo.start()
        except ServerError as exc:
            raise DemoError(f"cannot start the demo's servers: {exc}") from None
        pg.create_database("demo")
        source, target = pg.dsn("demo"), mongo.uri
        demo.say(f"  PostgreSQL {source}  (data in {pg.basedir})")
        demo.say(f"  MongoDB    {target}  (SecantusDB, data in {mongo.basedir})")
        demo.say(f"  loading {rows:,} rows into {data.TABLE} ...")
        data.load(source, rows)
        src = ["--source", source, "--table", data.TABLE]
        tgt = ["--target", target, "--db", DB]
        demo.run("plan", *src, "--workers", str(workers))
        copied = demo.run("copy", *src, *tgt, "--workers", str(workers), "--slot", SLOT, "--json")
        result = json.loads(copied.stdout.strip().splitlines()[-1])
        demo.run("status", *tgt)
        demo.run("verify", *src, *tgt)
        changed = data.change_a_few_rows(source)
        demo.say(
            f"\nchanged the source: updated id {changed['updated']}, deleted id "
            f"{changed['deleted']}, inserted id {changed['inserted']}; verify finds them:"
        )
        demo.run("verify", *src, *tgt, expect=EXIT_VERIFY)
        demo.say(
            f"\nchange capture applies them from slot {SLOT}, from the copy's consistent LSN on"
            " (without --stop-at-end, follow keeps the collection in step until stopped):"
        )
        demo.run("follow", *src, *tgt, "--slot", SLOT, "--stop-at-end")
        demo.run("verify", *src, *tgt)
        _drop_slot(source)
        demo.say(
            f"\ndone in {time.monotonic() - started:.0f} s: {result['rows']:,} rows copied into "
            f"{DB}.{data.TABLE} in {result['seconds']:.1f} s by {workers} workers; the job "
            f"documents are in {DB}.parallelsync_jobs; slot {SLOT} recorded the consistent LSN "
            f"{result['consistent_lsn']} (dropped again: a slot nobody reads retains WAL)."
        )
        if keep:
            _keep(demo, pg, mongo, source, target)
            if print_env:
                print(export_line(source, target), file=out, flush=True)
        return EXIT_OK
    finally:
        if not keep:
            mongo.cleanup()
            pg.cleanup()


def _drop_slot(dsn: str) -> None:
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            (SLOT,),
        )
        conn.execute(f"DROP PUBLICATION IF EXISTS {SLOT}")


def _keep(demo: Demo, pg: object, mongo: object, source: str, target: str) -> None:
    from parallelsync.demo.postgres import _LIVE, PostgresCluster
    from parallelsync.demo.secantus import SecantusServer

    assert isinstance(pg, PostgresCluster) and isinstance(mongo, SecantusServer)
    for server in (pg, mongo):
        _LIVE.discard(server)  # leave them running when this process exits
    state = {
        "postgres": {"bin_dir": str(pg.bin_dir), "datadir": str(pg.datadir),
                     "basedir": str(pg.basedir), "run_as": pg.run_as},
        "secantus": {"pid": mongo.pid, "basedir": str(mongo.basedir)},
        "source": source,
        "target": target,
    }  # fmt: skip
    STATE_FILE.write_text(json.dumps(state))
    demo.say(
        f"\nthe servers keep running (--keep):\n  export PG='{source}'\n  export MONGO='{target}'\n"
        f'  parallelsync copy --source "$PG" --table {data.TABLE} --target "$MONGO" '
        f"--db {DB} --workers 4\n"
        f'  parallelsync status --target "$MONGO" --db {DB}\n'
        "stop them with: parallelsync demo --stop"
    )


def export_line(source: str, target: str) -> str:
    return f"export PG={shlex.quote(source)} MONGO={shlex.quote(target)}"


def print_kept_env(out: TextIO = sys.stdout) -> int:
    """`demo --print-env` without --keep: the variables of the servers a --keep demo left."""
    if not STATE_FILE.exists():
        raise UsageError(
            f"no demo servers are running ({STATE_FILE} does not exist): start them with "
            "`parallelsync demo --keep --print-env`"
        )
    state = json.loads(STATE_FILE.read_text())
    print(export_line(state["source"], state["target"]), file=out)
    return EXIT_OK


def stop_kept(out: TextIO = sys.stdout) -> int:
    """Stop the servers a `demo --keep` left running, and remove their directories."""
    if not STATE_FILE.exists():
        raise UsageError(f"no demo servers to stop ({STATE_FILE} does not exist)")
    state = json.loads(STATE_FILE.read_text())
    pid = state["secantus"].get("pid")
    if pid:
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), 15)
    pgs = state["postgres"]
    cmd = [str(Path(pgs["bin_dir"]) / "pg_ctl"), "-D", pgs["datadir"], "-m", "fast", "-w", "stop"]
    if pgs.get("run_as"):
        cmd = ["runuser", "-u", pgs["run_as"], "--", *cmd]
    subprocess.run(cmd, cwd=pgs["basedir"], capture_output=True, check=False)
    for key in ("postgres", "secantus"):
        shutil.rmtree(state[key]["basedir"], ignore_errors=True)
    STATE_FILE.unlink()
    print("stopped the demo's servers and removed their data", file=out)
    return EXIT_OK
