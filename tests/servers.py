"""Private database servers for the test suite: a PostgreSQL cluster and a SecantusDB server.

Both run as separate processes in a temporary directory so that fault tests can stop, kill and
restart them. Each start waits at most `timeout` seconds and, on failure, raises `ServerError`
with the tail of the server's log, so a broken environment fails fast with a reason instead of
hanging the run.

When `PARALLELSYNC_TEST_PG_DSN` / `PARALLELSYNC_TEST_MONGO_URI` are set, the fixtures wrap those
servers instead (`ExternalPostgres`, `ExternalMongo`); those report `can_restart = False` and
refuse start/stop/restart, so fault tests skip them with a clear reason.

This is a plain module (not a conftest) so scripts and benchmarks can start the same servers.
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

PG_ENV = "PARALLELSYNC_TEST_PG_DSN"
MONGO_ENV = "PARALLELSYNC_TEST_MONGO_URI"
PG_BIN_ENV = "PARALLELSYNC_PG_BIN"

# The role the bad-password tests use. The private cluster authenticates it with scram-sha-256
# over TCP; every other role is trusted.
PASSWORD_ROLE = "ps_pw"
PASSWORD_ROLE_PASSWORD = "secret-pw"

# 60 s: a cold initdb + first start takes ~1-3 s here; anything near a minute is broken, and a
# hang must become an error long before a CI run's time limit.
DEFAULT_TIMEOUT = 60.0

# Server settings for tests: logical decoding for CDC, plenty of slots/connections for parallel
# workers, and durability off because test data is thrown away.
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

PG_HBA = f"""\
# Written by tests/servers.py. First match wins.
local   all          all                          trust
host    all          {PASSWORD_ROLE:<12} 127.0.0.1/32  scram-sha-256
host    all          {PASSWORD_ROLE:<12} ::1/128       scram-sha-256
host    all          all          127.0.0.1/32  trust
host    all          all          ::1/128       trust
host    replication  all          127.0.0.1/32  trust
host    replication  all          ::1/128       trust
"""


class ServerError(RuntimeError):
    """A test server could not be started, stopped or reached."""


# Every server this process created; whatever is still running at exit is stopped, so a script
# or an interrupted run does not leave postmasters and secantus processes behind.
_LIVE: weakref.WeakSet[PostgresCluster | SecantusServer] = weakref.WeakSet()


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


def _port_open(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
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
        "no PostgreSQL server binaries (initdb) found: run scripts/setup.sh, set "
        f"{PG_BIN_ENV} to a server bin dir, or set {PG_ENV} to an existing server's DSN"
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

    def __init__(self, bin_dir: Path | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.bin_dir = bin_dir or find_pg_bin_dir()
        self.timeout = timeout
        self.port = 0
        self.basedir = Path(tempfile.mkdtemp(prefix="parallelsync-pg-"))
        self.datadir = self.basedir / "data"
        self.sockdir = self.basedir / "sock"
        self.logfile = self.basedir / "postgres.log"
        self._run_as: str | None = None
        self._initialised = False
        self._roles_created = False
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
        self._run_as = "postgres"
        os.chown(self.basedir, pw.pw_uid, pw.pw_gid)

    def _cmd(self, args: Sequence[str]) -> list[str]:
        if self._run_as:
            return ["runuser", "-u", self._run_as, "--", *args]
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
                + _tail(self.logfile)
            ) from None
        if proc.returncode != 0:
            raise ServerError(
                f"{what} failed (exit {proc.returncode}): {proc.stderr.strip() or proc.stdout}\n"
                f"log tail ({self.logfile}):\n{_tail(self.logfile)}"
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
        if self._run_as:
            pw = pwd.getpwnam(self._run_as)
            os.chown(self.sockdir, pw.pw_uid, pw.pw_gid)
        (self.datadir / "pg_hba.conf").write_text(PG_HBA)
        self._initialised = True

    def _write_conf(self) -> None:
        conf = dict(PG_SETTINGS)
        conf.update(
            port=str(self.port),
            listen_addresses=f"'{self.host}'",
            unix_socket_directories=f"'{self.sockdir}'",
        )
        text = "".join(f"{k} = {v}\n" for k, v in conf.items())
        # A file of its own, included last, so restart() keeps the same port.
        (self.datadir / "parallelsync_test.conf").write_text(text)
        main = self.datadir / "postgresql.conf"
        include = "include = 'parallelsync_test.conf'\n"
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
                if attempt == attempts - 1 or "could not bind" not in _tail(self.logfile):
                    raise
        self.running = True
        self._wait_connectable()
        if not self._roles_created:
            self.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD_ROLE_PASSWORD)
                )
            )
            self._roles_created = True

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
            f"{last}\nlog tail ({self.logfile}):\n{_tail(self.logfile)}"
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
            auth += ":" + _quote(password)
        return f"postgresql://{auth}@{self.host}:{self.port}/{_quote(dbname)}"

    @property
    def admin_dsn(self) -> str:
        return self.dsn("postgres")

    def execute(self, query: Any, params: Sequence[Any] | None = None,
                dbname: str = "postgres") -> list[tuple[Any, ...]]:  # fmt: skip
        """Run one statement in autocommit as the superuser; return its rows (or [])."""
        return _execute(self.dsn(dbname), query, params)

    def create_database(self, name: str) -> str:
        """Create database `name` and return its DSN."""
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        _drop_database(self.admin_dsn, name)


class ExternalPostgres:
    """An existing server given by `PARALLELSYNC_TEST_PG_DSN` (a superuser DSN).

    It cannot be stopped or restarted from the tests, and its pg_hba.conf is not ours, so
    `password_auth_enforced` is only true if a wrong password is actually refused.
    """

    can_restart = False
    reason = f"{PG_ENV} is set: the external PostgreSQL server cannot be stopped or restarted"

    def __init__(self, dsn: str) -> None:
        self._params = conninfo_to_dict(dsn)
        self.superuser = str(self._params.get("user") or os.environ.get("USER", "postgres"))
        self.host = str(self._params.get("host") or "localhost")
        self.port = int(self._params.get("port") or 5432)
        self.bin_dir: Path | None = None
        self.datadir: Path | None = None
        self.running = True

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise ServerError(self.reason)

    start = stop = restart = _refuse

    def cleanup(self) -> None:
        pass

    def dsn(
        self, dbname: str = "postgres", *, user: str | None = None, password: str | None = None
    ) -> str:
        params: dict[str, Any] = dict(self._params, dbname=dbname)
        if user is not None:
            params["user"] = user
            params.pop("password", None)
        if password is not None:
            params["password"] = password
        return make_conninfo("", **params)

    @property
    def admin_dsn(self) -> str:
        return self.dsn(str(self._params.get("dbname") or "postgres"))

    def check(self) -> None:
        rows = self.execute("SHOW wal_level")
        if rows[0][0] != "logical":
            raise ServerError(f"{PG_ENV} server has wal_level={rows[0][0]}: it must be logical")
        self.execute(
            sql.SQL(
                "DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = {r}) THEN "
                "CREATE ROLE {i} LOGIN PASSWORD {p}; END IF; END $$"
            ).format(
                r=sql.Literal(PASSWORD_ROLE),
                i=sql.Identifier(PASSWORD_ROLE),
                p=sql.Literal(PASSWORD_ROLE_PASSWORD),
            )
        )

    def execute(self, query: Any, params: Sequence[Any] | None = None,
                dbname: str | None = None) -> list[tuple[Any, ...]]:  # fmt: skip
        return _execute(self.dsn(dbname) if dbname else self.admin_dsn, query, params)

    def create_database(self, name: str) -> str:
        self.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.dsn(name)

    def drop_database(self, name: str) -> None:
        _drop_database(self.admin_dsn, name)


def _quote(s: str) -> str:
    from urllib.parse import quote

    return quote(s, safe="")


def _execute(dsn: str, query: Any, params: Sequence[Any] | None) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


def _drop_database(admin_dsn: str, name: str, timeout: float = 30.0) -> None:
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


# Runs `secantus.cli.main` like `python -m secantus`, with one fix: its main thread idles in
# `Event.wait()` without a timeout, and when the kernel delivers SIGTERM to another of its threads
# the main thread never wakes to run the handler, so about one stop in three hung until SIGKILL
# (seen with secantusdb 0.7.0b3). A timed wait returns to the interpreter, which runs the handler.
_SECANTUS_LAUNCHER = """\
# Written by parallelsync's tests/servers.py: `python -m secantus` with a signal-safe wait.
import sys
from secantus.server import SecantusDBServer
from secantus.cli import main

_original_wait = SecantusDBServer.wait


def _wait(self):
    event = getattr(self, "_stop_event", None)
    if event is None:
        return _original_wait(self)
    while not event.wait(0.2):
        pass


SecantusDBServer.wait = _wait
sys.argv[0] = "secantus"
raise SystemExit(main(sys.argv[1:]))
"""


class SecantusServer:
    """SecantusDB as a subprocess (its `python -m secantus` CLI) on 127.0.0.1:<port>.

    A subprocess rather than in-process so fault tests can kill it (SIGKILL) and restart it on
    the same port. The storage lives in a temp dir (not ':memory:') so a restart keeps the data;
    an empty `--config` file stops it from picking up a stray ./secantusd.toml.
    """

    can_restart = True
    host = "127.0.0.1"
    READY = "secantus listening on"

    def __init__(
        self,
        port: int | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        extra_args: Sequence[str] = (),
        python: str = sys.executable,
    ) -> None:
        self.port = port or free_port()
        self.timeout = timeout
        self.extra_args = list(extra_args)
        self.python = python
        self.basedir = Path(tempfile.mkdtemp(prefix="parallelsync-secantus-"))
        self.storage_path = self.basedir / "data"
        self.logfile = self.basedir / "secantus.log"
        self.config = self.basedir / "secantusd.toml"
        self.config.write_text("# empty: disables config auto-discovery\n")
        self.launcher = self.basedir / "run_secantus.py"
        self.launcher.write_text(_SECANTUS_LAUNCHER)
        self._proc: subprocess.Popen[bytes] | None = None
        _LIVE.add(self)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.poll() is None else None

    @property
    def running(self) -> bool:
        return self.pid is not None

    def start(self) -> None:
        """Start and wait for the 'listening' line; raise ServerError with the log tail if not."""
        if self.running:
            return
        args = [
            self.python, str(self.launcher),
            "--config", str(self.config),
            "--host", self.host,
            "--port", str(self.port),
            "--storage-path", str(self.storage_path),
            "--enable-test-commands",
            "--log-level", "INFO",
            *self.extra_args,
        ]  # fmt: skip
        with self.logfile.open("ab") as log:
            log.write(f"---- start {time.strftime('%H:%M:%S')}: {' '.join(args)}\n".encode())
            log.flush()
            offset = log.tell()
            self._proc = subprocess.Popen(
                args, cwd=self.basedir, stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                self._proc = None
                raise ServerError(
                    f"secantus exited with code {code} while starting on port {self.port}\n"
                    f"log tail ({self.logfile}):\n{_tail(self.logfile)}"
                )
            with self.logfile.open("rb") as f:
                f.seek(offset)
                if self.READY.encode() in f.read() and _port_open(self.host, self.port):
                    return
            time.sleep(0.05)
        self.kill()
        raise ServerError(
            f"secantus did not start listening on port {self.port} within {self.timeout:.0f} s\n"
            f"log tail ({self.logfile}):\n{_tail(self.logfile)}"
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (SIGTERM: closes WiredTiger cleanly); SIGKILL after `timeout`."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        # Closing a listening socket does not wake a thread blocked in accept() on Linux, so
        # secantus waits 2 s for its accept thread; a connection made after the handler ran
        # wakes it at once.
        for _ in range(20):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(0.1)
            if proc.poll() is not None:
                break
            _port_open(self.host, self.port)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def kill(self) -> None:
        """Crash the server (SIGKILL), as a fault test would."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart(self, *, crash: bool = False) -> None:
        """Stop (or kill, with `crash=True`) and start again on the same port and storage."""
        if crash:
            self.kill()
        else:
            self.stop()
        self.start()

    def cleanup(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.basedir, ignore_errors=True)

    def __enter__(self) -> SecantusServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


class ExternalMongo:
    """An existing MongoDB-protocol server given by `PARALLELSYNC_TEST_MONGO_URI`."""

    can_restart = False
    reason = f"{MONGO_ENV} is set: the external MongoDB server cannot be stopped or restarted"
    pid = None

    def __init__(self, uri: str) -> None:
        self.uri = uri

    def _refuse(self, *args: object, **kwargs: object) -> None:
        raise ServerError(self.reason)

    start = stop = restart = kill = _refuse

    def cleanup(self) -> None:
        pass


PgServer = PostgresCluster | ExternalPostgres
MongoServer = SecantusServer | ExternalMongo


def require_restartable(server: PgServer | MongoServer) -> None:
    """Skip the calling test when `server` is an external one that cannot be stopped."""
    import pytest

    if not server.can_restart:
        pytest.skip(getattr(server, "reason", "server cannot be restarted"))
