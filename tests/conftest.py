"""Shared fixtures: a private PostgreSQL cluster and a SecantusDB server for the whole session.

PostgreSQL (`pg_cluster`): a cluster started from the server binaries in a temp dir, listening on
127.0.0.1:<random port>, `wal_level=logical`. Authentication: the superuser `postgres` is trusted
over TCP (no password); the role `ps_pw` (password `secret-pw`, see `servers.PASSWORD_ROLE*`) must
authenticate with scram-sha-256, for the bad-password tests. Set `PARALLELSYNC_TEST_PG_DSN` to a
superuser DSN of an existing server (wal_level=logical) to use it instead.

MongoDB protocol (`mongo_server`): SecantusDB as a subprocess with storage in a temp dir, so it
can be killed and restarted on the same port with its data. Set `PARALLELSYNC_TEST_MONGO_URI` to
use an existing MongoDB instead.

External servers report `can_restart = False`; fault tests call `servers.require_restartable()`.
Under pytest-xdist every worker is a session, with servers of its own; an external server cannot be
shared by several workers (its replication slots are cluster-wide), so that is refused.
Each test gets its own PostgreSQL database (`pg_dsn`) and MongoDB database (`mongo_db_name`),
both dropped afterwards. The servers are started lazily, so unit tests never start them.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pymongo import MongoClient
from pymongo.database import Database

from tests.servers import (
    MONGO_ENV,
    PG_ENV,
    ExternalMongo,
    ExternalPostgres,
    MongoServer,
    PgServer,
    PostgresCluster,
    SecantusServer,
    ServerError,
)


def _unique_name(request: pytest.FixtureRequest, prefix: str, max_len: int) -> str:
    """`<prefix>_<test name>_<8 hex>`: lower case [a-z0-9_], at most `max_len` characters."""
    base = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")
    suffix = uuid.uuid4().hex[:8]
    base = base[: max_len - len(prefix) - len(suffix) - 2]
    return f"{prefix}_{base}_{suffix}"


def _refuse_shared(env: str) -> None:
    """Under pytest-xdist each worker is a session of its own: a private server each, but one
    external server would be shared, and its replication slots (cluster-wide) and fail points
    (server-wide) would meet across workers."""
    if int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1")) > 1:
        pytest.fail(
            f"{env} is set and the tests run in several workers (-n): they would share that "
            "server's replication slots; run serially (PARALLELSYNC_TEST_WORKERS=1 or no -n)",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgServer]:
    """This session's PostgreSQL server (a `PostgresCluster`, or `ExternalPostgres`); under
    pytest-xdist a session is one worker, so each worker has its own cluster."""
    external = os.environ.get(PG_ENV)
    server: PgServer
    if external:
        _refuse_shared(PG_ENV)
    try:
        if external:
            server = ExternalPostgres(external)
            server.check()
        else:
            server = PostgresCluster()
            try:
                server.start()
            except BaseException:
                server.cleanup()
                raise
    except (ServerError, psycopg.Error) as e:
        pytest.fail(f"cannot start the test PostgreSQL server: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def pg_dsn(pg_cluster: PgServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh database for this test (name from the test's name); dropped afterwards."""
    if pg_cluster.can_restart and not pg_cluster.running:
        # A fault test stopped the cluster and did not bring it back.
        pg_cluster.start()
    name = _unique_name(request, "t", 63)
    dsn = pg_cluster.create_database(name)
    try:
        yield dsn
    finally:
        if pg_cluster.can_restart and not pg_cluster.running:
            pg_cluster.start()
        pg_cluster.drop_database(name)


@pytest.fixture
def pg_conn(pg_dsn: str) -> Iterator[psycopg.Connection[tuple[Any, ...]]]:
    """An autocommit connection to this test's database, as the superuser."""
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        yield conn


@pytest.fixture(scope="session")
def mongo_server() -> Iterator[MongoServer]:
    """This session's (worker's) MongoDB-protocol server (`SecantusServer`, or `ExternalMongo`)."""
    external = os.environ.get(MONGO_ENV)
    server: MongoServer
    if external:
        _refuse_shared(MONGO_ENV)
        server = ExternalMongo(external)
    else:
        server = SecantusServer()
        try:
            server.start()
        except ServerError as e:
            server.cleanup()
            pytest.fail(f"cannot start the test SecantusDB server: {e}", pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def mongo_uri(mongo_server: MongoServer) -> str:
    return mongo_server.uri


@pytest.fixture(scope="session")
def mongo_client(mongo_uri: str) -> Iterator[MongoClient[dict[str, Any]]]:
    """One client for the session; it reconnects by itself after a server restart."""
    client: MongoClient[dict[str, Any]] = MongoClient(
        mongo_uri, serverSelectionTimeoutMS=20_000, connectTimeoutMS=10_000
    )
    try:
        client.admin.command("ping")
    except Exception as e:
        client.close()
        pytest.fail(f"cannot reach the test MongoDB server at {mongo_uri}: {e}", pytrace=False)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture
def mongo_db_name(
    mongo_server: MongoServer,
    mongo_client: MongoClient[dict[str, Any]],
    request: pytest.FixtureRequest,
) -> Iterator[str]:
    """A database name unique to this test; the database is dropped afterwards."""
    name = _unique_name(request, "t", 60)
    try:
        yield name
    finally:
        if isinstance(mongo_server, SecantusServer) and not mongo_server.running:
            mongo_server.start()  # a fault test left it down
        mongo_client.drop_database(name)


@pytest.fixture
def mongo_db(
    mongo_client: MongoClient[dict[str, Any]], mongo_db_name: str
) -> Database[dict[str, Any]]:
    return mongo_client[mongo_db_name]
