"""Database servers for the test suite: a private PostgreSQL cluster and a SecantusDB server.

The servers themselves are the package's throwaway servers (`parallelsync/demo/`, also used by
`parallelsync demo`); this module adds what only tests need: the password role for bad-password
tests, and wrappers for external servers.

When `PARALLELSYNC_TEST_PG_DSN` / `PARALLELSYNC_TEST_MONGO_URI` are set, the fixtures wrap those
servers instead (`ExternalPostgres`, `ExternalMongo`); those report `can_restart = False` and
refuse start/stop/restart, so fault tests skip them with a clear reason.

This is a plain module (not a conftest) so scripts and benchmarks can start the same servers.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from parallelsync.demo import postgres
from parallelsync.demo.postgres import ServerError
from parallelsync.demo.secantus import SecantusServer

PG_ENV = "PARALLELSYNC_TEST_PG_DSN"
MONGO_ENV = "PARALLELSYNC_TEST_MONGO_URI"

# The role the bad-password tests use. The private cluster authenticates it with scram-sha-256
# over TCP; every other role is trusted.
PASSWORD_ROLE = "ps_pw"
PASSWORD_ROLE_PASSWORD = "secret-pw"

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


class PostgresCluster(postgres.PostgresCluster):
    """The package's throwaway cluster, plus the scram-authenticated test role."""

    hba = PG_HBA

    def first_start(self) -> None:
        self.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                sql.Identifier(PASSWORD_ROLE), sql.Literal(PASSWORD_ROLE_PASSWORD)
            )
        )


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


def _execute(dsn: str, query: Any, params: Sequence[Any] | None) -> list[tuple[Any, ...]]:
    return postgres.execute(dsn, query, params)


def _drop_database(admin_dsn: str, name: str) -> None:
    postgres.drop_database(admin_dsn, name)


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
