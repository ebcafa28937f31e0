"""A private PostgreSQL cluster tuned for bulk benchmarks, or the one in PARALLELSYNC_BENCH_PG_DSN.

The cluster listens on 127.0.0.1 only (connectorx needs TCP) plus a unix socket inside its own
directory, runs as the `postgres` system user when we are root (initdb refuses root), and is
stopped and deleted by `stop()` or at interpreter exit.

    python benchmarks/pgserver.py            # start, print the DSN, wait for Ctrl-C
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_DSN = "PARALLELSYNC_BENCH_PG_DSN"
PG_BIN = Path(os.environ.get("PARALLELSYNC_PG_BIN", "/usr/lib/postgresql/15/bin"))

# Bulk-load settings: durability is irrelevant for a throw-away cluster, and WAL/checkpoint work
# during data generation would otherwise dominate set-up time. wal_level=logical because
# parallelsync exports its snapshot through a logical replication slot.
BULK_SETTINGS: dict[str, str] = {
    "shared_buffers": "1GB",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_wal_size": "4GB",
    "checkpoint_timeout": "30min",
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_connections": "100",
    "maintenance_work_mem": "512MB",
    "work_mem": "64MB",
    # Data generation is single-statement; parallel workers would compete with the client side
    # for the two cores during measured COPYs.
    "max_parallel_workers_per_gather": "0",
    "autovacuum": "off",
    "logging_collector": "off",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_postgres(cmd: Sequence[str]) -> list[str]:
    """Prefix `cmd` so it runs as the postgres user when we are root."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return list(cmd)


@dataclass
class PgServer:
    dsn: str
    """libpq key/value DSN over TCP 127.0.0.1."""
    url: str
    """The same as a postgresql:// URL (connectorx wants a URL)."""
    stop: Callable[[], None]
    owned: bool


def _url_from_dsn(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    d = conninfo_to_dict(dsn)
    user = d.get("user") or "postgres"
    pw = f":{d['password']}" if d.get("password") else ""
    host = d.get("host") or "127.0.0.1"
    port = d.get("port") or "5432"
    db = d.get("dbname") or user
    return f"postgresql://{user}{pw}@{host}:{port}/{db}"


def start(keep: bool = False) -> PgServer:
    """Return the env-provided server, or initdb + start a private one."""
    env = os.environ.get(ENV_DSN)
    if env:
        return PgServer(dsn=env, url=_url_from_dsn(env), stop=lambda: None, owned=False)
    if not (PG_BIN / "initdb").exists():
        raise RuntimeError(
            f"no PostgreSQL binaries in {PG_BIN}: set {ENV_DSN} or PARALLELSYNC_PG_BIN"
        )

    root = Path(tempfile.mkdtemp(prefix="psbench-pg-"))
    data = root / "data"
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    os.chmod(root, 0o755)
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "--auth=trust",
                "--no-sync",
                "-E",
                "UTF8",
                "--locale=C",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    port = free_port()
    conf = dict(
        BULK_SETTINGS,
        port=str(port),
        listen_addresses="'127.0.0.1'",
        unix_socket_directories=f"'{root}'",
    )
    with open(data / "postgresql.conf", "a") as f:
        f.writelines(f"{k} = {v}\n" for k, v in conf.items())
    subprocess.run(
        _as_postgres(
            [
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(data),
                "-l",
                str(root / "log"),
                "-w",
                "-t",
                "60",
                "start",
            ]
        ),
        check=True,
        stdout=subprocess.DEVNULL,
    )

    stopped = False

    def stop() -> None:
        nonlocal stopped
        if stopped or keep:
            return
        stopped = True
        subprocess.run(
            _as_postgres(
                [str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"]
            ),
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(stop)
    dsn = f"host=127.0.0.1 port={port} user=postgres dbname=postgres"
    return PgServer(dsn=dsn, url=_url_from_dsn(dsn), stop=stop, owned=True)


def main() -> None:
    srv = start()
    print(srv.dsn, flush=True)
    print(srv.url, flush=True)
    # Block the signals so sigwait receives them instead of the default handlers killing us
    # before the cluster is stopped.
    sigs = {signal.SIGINT, signal.SIGTERM}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
    try:
        signal.sigwait(sigs)
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
