"""A throwaway PostgreSQL cluster: initdb into a temp dir, a free port, `wal_level=logical`.

The demo (`parallelsync demo`) and the test suite start their servers with this. initdb refuses
to run as root, so as root the cluster runs as the `postgres` system user (`runuser`), which the
PostgreSQL server package creates; otherwise as the current user. Every start waits at most
`timeout` seconds and, on failure, raises `ServerError` with the tail of the server's log.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

PG_BIN_ENV = "PARALLELSYNC_PG_BIN"

# 60 s: a cold initdb + first start takes ~1-3 s here; anything near a minute is broken, and a
# hang must become an error long before a CI run's time limit.
DEFAULT_TIMEOUT = 60.0

# Logical decoding for change capture, room for parallel workers, and durability off: the data
# of a throwaway cluster is thrown away.
PG_SETTINGS: dict[str, str] = {
    "wal_level": "logical",
    "max_replication_slots": "20",
    "max_wal_senders": "20",
    "max_connections": "200",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "password_encryption": "'scram-sha-256'",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %q%u@%d '",
}

# Local and loopback connections are trusted: the cluster lives for one demo or test session.
PG_HBA = """\
# Written by parallelsync. First match wins.
local   all          all                          trust
host    all          all          127.0.0.1/32  trust
host    all          all          ::1/128       trust
host    replication  all          127.0.0.1/32  trust
host    replication  all          ::1/128       trust
"""


class ServerError(RuntimeError):
    """A throwaway server could not be started, stopped or reached."""


# Every server this process created; whatever is still running at exit is stopped, so a script
# or an interrupted run does not leave postmasters and secantus processes behind.
_LIVE: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _cleanup_all() -> None:
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.cleanup()


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the caller retries if it races)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        return f"<no log at {path}: {e}>"
    return "\n".join(text.splitlines()[-lines:]) or "<log is empty>"


def find_pg_bin_dir() -> Path:
    """The newest PostgreSQL server bin dir: $PARALLELSYNC_PG_BIN, Debian's layout, or PATH."""
    env = os.environ.get(PG_BIN_ENV)
    if env:
        if not (Path(env) / "initdb").exists():
            raise ServerError(f"{PG_BIN_ENV}={env} has no initdb: point it at a server bin dir")
        return Path(env)

    def version(path: str) -> tuple[int, ...]:
        m = re.search(r"/postgresql/([\d.]+)/bin/", path)
        return tuple(int(p) for p in m.group(1).split(".")) if m else (0,)

    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=version)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise ServerError(
        "no PostgreSQL server binaries (initdb) found: run scripts/setup.sh (it installs the "
        f"server package), or set {PG_BIN_ENV} to a server bin dir"
    )


class PostgresCluster:
    """A private PostgreSQL cluster in a temp dir, listening on 127.0.0.1:<random port>.

    initdb refuses to run as root, so when the tests run as root the cluster runs as the
    `postgres` system user (`runuser`) and its temp dir is chowned to that user; otherwise it
    runs as the current user. The unix socket lives in the temp dir too (never /var/run), but
    tests connect over TCP as the trusted superuser `postgres`.
    """

    can_restart = True
    superuser = "postgres"
    host = "127.0.0.1"

    hba = PG_HBA
    settings = PG_SETTINGS

    def __init__(self, bin_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.bin_dir = bin_dir or find_pg_bin_dir()
        self.timeout = timeout
        self.port = 0
        self.basedir = Path(tempfile.mkdtemp(prefix="parallelsync-pg-"))
        self.datadir = self.basedir / "data"
        self.sockdir = self.basedir / "sock"
        self.logfile = self.basedir / "postgres.log"
        self.run_as: str | None = None
        self._initialised = False
        self._first_start_done = False
        self.running = False
        _LIVE.add(self)

    # ---- process control -------------------------------------------------------------------
    def _prepare_user(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            pw = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerError(
                "running as root but there is no 'postgres' system user to run the cluster as "
                "(initdb refuses root): install the postgresql package (scripts/setup.sh)"
            ) from None
        if not shutil.which("runuser"):
            raise ServerError("running as root but 'runuser' is missing (util-linux)")
        self.run_as = "postgres"
        os.chown(self.basedir, pw.pw_uid, pw.pw_gid)

    def _cmd(self, args: Sequence[str]) -> list[str]:
        if self.run_as:
            return ["runuser", "-u", self.run_as, "--", *args]
        return list(args)

    def _run(self, args: Sequence[str], what: str, timeout: float | None = None) -> str:
        # cwd=basedir: runuser keeps the caller's cwd, which the postgres user may not be able
        # to read (e.g. /root), and initdb/pg_ctl complain about that.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        try:
            proc = subprocess.run(
                self._cmd(args),
                cwd=self.basedir,
                env=env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout or self.timeout,
            )
        except subprocess.TimeoutExpired as e:
            raise ServerError(
                f"{what} timed out after {e.timeout:.0f} s\nlog tail ({self.logfile}):\n"
                + tail(self.logfile)
            ) from None
        if proc.returncode != 0:
            raise ServerError(
                f"{what} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout}\n"
                f"log tail ({self.logfile}):\n{tail(self.logfile)}"
            )
        return proc.stdout

    def initdb(self) -> None:
        self._prepare_user()
        self._run(
            [
                str(self.bin_dir / "initdb"),
                "-D", str(self.datadir),
                "-U", self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )  # fmt: skip
        self.sockdir.mkdir()
        if self.run_as:
            pw = pwd.getpwnam(self.run_as)
            os.chown(self.sockdir, pw.pw_uid, pw.pw_gid)
        (self.datadir / "pg_hba.conf").write_text(self.hba)
        self._initialised = True

    def _write_conf(self) -> None:
        conf = dict(self.settings)
        conf.update(
            port=str(self.port),
            listen_addresses=f"'{self.host}'",
            unix_socket_directories=f"'{self.sockdir}'",
        )
        text = "".join(f"{k} = {v}\n" for k, v in conf.items())
        # A file of its own, included last, so restart() keeps the same port.
        (self.datadir / "parallelsync.conf").write_text(text)
        main = self.datadir / "postgresql.conf"
        include = "include = 'parallelsync.conf'\n"
        if include not in main.read_text():
            with main.open("a") as f:
                f.write(include)

    def start(self) -> None:
        """initdb (first time), pick a port, start, wait until it accepts TCP connections."""
        if self.running:
            return
        if not self._initialised:
            self.initdb()
        attempts = 1 if self.port else 3  # a fresh random port may race; a fixed one must work
        for attempt in range(attempts):
            if not self.port or attempt:
                self.port = free_port()
            self._write_conf()
            try:
                self._pg_ctl_start()
                break
            except ServerError:
                if attempt == attempts - 1 or "could not bind" not in tail(self.logfile):
                    raise
        self.running = True
        self._wait_connectable()
        if not self._first_start_done:
            self.first_start()
            self._first_start_done = True

    def first_start(self) -> None:
        """Called once, after the first start (subclasses create roles here)."""

    def _pg_ctl_start(self) -> None:
        self._run(
            [
                str(self.bin_dir / "pg_ctl"),
                "-D", str(self.datadir),
                "-l", str(self.logfile),
                "-w", "-t", str(int(self.timeout)),
                "start",
            ],
            "pg_ctl start",
            timeout=self.timeout + 5,
        )  # fmt: skip

    def _wait_connectable(self) -> None:
        deadline = time.monotonic() + self.timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                with psycopg.connect(self.admin_dsn, connect_timeout=5):
                    return
            except psycopg.OperationalError as e:
                last = e
                time.sleep(0.1)
        raise ServerError(
            f"postgres on port {self.port} did not accept connections in {self.timeout:.0f} s: "
            f"{last}\nlog tail ({self.logfile}):\n{tail(self.logfile)}"
        )

    def stop(self, mode: str = "fast") -> None:
        """Stop the server; mode is pg_ctl's: 'smart', 'fast' or 'immediate' (a crash)."""
        if not self.running:
            return
        self._run(
            [str(self.bin_dir / "pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w",
             "-t", str(int(self.timeout)), "stop"],
            f"pg_ctl stop -m {mode}",
            timeout=self.timeout + 5,
        )  # fmt: skip
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop and start again on the same port, keeping the data."""
        self.stop(mode)
        self.start()

    def cleanup(self) -> None:
        """Stop the server (if running) and delete its temp dir."""
        try:
            if self.running:
                self.stop("immediate")
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> PostgresCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    # ---- connection strings and admin SQL --------------------------------------------------
    def dsn(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        """A libpq URL for `dbname` over TCP, as the superuser unless `user` is given."""
        auth = user or self.superuser
        if password is not None:
            auth += ":" + quote(password)
        return f"postgresql://{auth}@{self.host}:{self.port}/{quote(dbname)}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def execute(self, query: Any, params: Sequence[Any] | None = None,
                dbname: str = "postgres") -> list[tuple[Any, ...]]:  # fmt: skip
        """Run one statement in autocommit as the superuser; return its rows (or [])."""
        return execute(self.dsn(dbname), query, params)

    def create_database(self, name: str) -> str:
        """Create database `name` and return its DSN."""
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        drop_database(self.admin_dsn, name)


def quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def execute(dsn: str, query: Any, params: Sequence[Any] | None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def drop_database(admin_dsn: str, name: str, timeout: float = 30.0) -> None:
    """Drop `name` even if sessions, walsenders or replication slots still use it."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(admin_dsn, autocommit=True, connect_timeout=10) as conn:
        while True:
            # Walsenders of logical replication connections show up here with their datname.
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                conn.execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                    "WHERE database = %s",
                    (name,),
                )
                conn.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
                )
                return
            except (psycopg.errors.ObjectInUse, psycopg.errors.UndefinedObject):
                # A slot still active for a moment after its walsender was terminated, or
                # dropped concurrently: try again.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
