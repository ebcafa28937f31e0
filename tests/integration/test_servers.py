"""The test environment itself: what every integration test relies on from the two servers."""

from __future__ import annotations

import socket
from typing import Any

import psycopg
import pytest
from bson import encode
from bson.raw_bson import RawBSONDocument
from psycopg import sql
from pymongo import ASCENDING, MongoClient
from pymongo.database import Database

from tests.servers import (
    PASSWORD_ROLE,
    PASSWORD_ROLE_PASSWORD,
    MongoServer,
    PgServer,
    SecantusServer,
    ServerError,
    require_restartable,
)


def test_wal_level_is_logical(pg_conn: psycopg.Connection[tuple[Any, ...]]) -> None:
    assert pg_conn.execute("SHOW wal_level").fetchone() == ("logical",)
    row = pg_conn.execute("SELECT current_setting('max_replication_slots')::int").fetchone()
    assert row is not None and row[0] >= 10


def test_each_test_gets_its_own_database(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    name = pg_conn.execute("SELECT current_database()").fetchone()
    assert name is not None
    assert name[0].startswith("t_test_each_test_gets_its_own_database_")
    assert pg_conn.info.dbname == name[0]
    assert pg_conn.execute(
        "SELECT rolsuper FROM pg_roles WHERE rolname = current_user"
    ).fetchone() == (True,)


def test_exported_snapshot_from_logical_slot(pg_dsn: str, pg_conn: psycopg.Connection[Any]) -> None:
    pg_conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 10) g")

    with psycopg.connect(pg_dsn, autocommit=True, replication="database") as repl:
        row = repl.execute(
            "CREATE_REPLICATION_SLOT ps_test_slot LOGICAL pgoutput (SNAPSHOT 'export')"
        ).fetchone()
        assert row is not None
        slot_name, consistent_point, snapshot_name, plugin = row
        assert slot_name == "ps_test_slot"
        assert plugin == "pgoutput"
        assert "/" in consistent_point  # an LSN such as 0/1A2B3C8
        assert snapshot_name

        # Written after the slot: invisible in the exported snapshot, visible to the slot.
        pg_conn.execute("INSERT INTO t VALUES (11, 'after')")

        with psycopg.connect(pg_dsn) as worker:
            worker.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            # A utility statement: no bind parameters, so quote the name client-side.
            worker.execute(
                sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot_name))
            )
            assert worker.execute("SELECT count(*), max(id) FROM t").fetchone() == (10, 10)
            worker.rollback()

    slot = pg_conn.execute(
        "SELECT slot_type, plugin, confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = 'ps_test_slot'"
    ).fetchone()
    assert slot == ("logical", "pgoutput", consistent_point)
    # The slot is left behind on purpose: the pg_dsn teardown must drop it with the database.


def test_password_role(pg_cluster: PgServer, pg_dsn: str) -> None:
    dbname = psycopg.conninfo.conninfo_to_dict(pg_dsn)["dbname"]
    assert isinstance(dbname, str)
    good = pg_cluster.dsn(dbname, user=PASSWORD_ROLE, password=PASSWORD_ROLE_PASSWORD)
    with psycopg.connect(good, connect_timeout=10) as conn:
        assert conn.execute("SELECT current_user").fetchone() == (PASSWORD_ROLE,)

    if not pg_cluster.can_restart:
        pytest.skip("external server: its pg_hba.conf may trust every role")
    bad = pg_cluster.dsn(dbname, user=PASSWORD_ROLE, password="wrong-pw")
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(bad, connect_timeout=10)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(pg_cluster.dsn(dbname, user=PASSWORD_ROLE), connect_timeout=10)


def test_create_and_drop_database(pg_cluster: PgServer) -> None:
    dsn = pg_cluster.create_database("ps_env_scratch")
    with psycopg.connect(dsn, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == ("ps_env_scratch",)
        # An open session and a slot must not stop the drop.
        pg_cluster.execute("SELECT pg_create_logical_replication_slot('ps_scratch', 'pgoutput')",
                           dbname="ps_env_scratch")  # fmt: skip
        pg_cluster.drop_database("ps_env_scratch")
    rows = pg_cluster.execute(
        "SELECT (SELECT count(*) FROM pg_database WHERE datname = 'ps_env_scratch'), "
        "(SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'ps_scratch')"
    )
    assert rows == [(0, 0)]


def test_raw_bson_insert_many(mongo_db: Database[dict[str, Any]]) -> None:
    docs = [RawBSONDocument(encode({"_id": i, "v": f"row{i}", "n": i * 1.5})) for i in range(100)]
    result = mongo_db.items.insert_many(docs, ordered=False)
    assert result.acknowledged
    # pymongo does not collect _id values from raw documents: count on the server instead.
    assert result.inserted_ids == []
    assert mongo_db.items.count_documents({}) == 100
    assert mongo_db.items.find_one({"_id": 42}) == {"_id": 42, "v": "row42", "n": 63.0}


def test_rename_with_drop_target_keeps_source_indexes(
    mongo_client: MongoClient[dict[str, Any]], mongo_db: Database[dict[str, Any]]
) -> None:
    mongo_db.target.insert_many([{"_id": 1, "old": True}])
    mongo_db.target.create_index([("old", ASCENDING)], name="old_1")
    mongo_db.tmp.insert_many([{"_id": i, "k": i % 7} for i in range(20)])
    mongo_db.tmp.create_index([("k", ASCENDING)], name="k_1")

    mongo_client.admin.command(
        "renameCollection",
        f"{mongo_db.name}.tmp",
        to=f"{mongo_db.name}.target",
        dropTarget=True,
    )

    assert "tmp" not in mongo_db.list_collection_names()
    assert mongo_db.target.count_documents({}) == 20
    assert mongo_db.target.find_one({"old": True}) is None
    assert sorted(mongo_db.target.index_information()) == ["_id_", "k_1"]
    assert mongo_db.target.index_information()["k_1"]["key"] == [("k", 1)]


def test_restart_keeps_data(
    mongo_server: MongoServer,
    mongo_client: MongoClient[dict[str, Any]],
    mongo_db: Database[dict[str, Any]],
) -> None:
    require_restartable(mongo_server)
    assert isinstance(mongo_server, SecantusServer)
    mongo_db.kept.insert_many([{"_id": i} for i in range(10)])
    old_pid, port = mongo_server.pid, mongo_server.port

    mongo_server.restart()

    assert mongo_server.pid is not None and mongo_server.pid != old_pid
    assert mongo_server.port == port
    assert mongo_db.kept.count_documents({}) == 10
    assert mongo_client.admin.command("ping")["ok"] == 1.0


def test_secantus_comes_back_after_a_crash(
    mongo_server: MongoServer, mongo_db: Database[dict[str, Any]]
) -> None:
    require_restartable(mongo_server)
    assert isinstance(mongo_server, SecantusServer)
    old_pid = mongo_server.pid

    mongo_server.restart(crash=True)  # SIGKILL, then start on the same port and storage

    assert mongo_server.pid is not None and mongo_server.pid != old_pid
    mongo_db.after_crash.insert_one({"_id": 1})
    assert mongo_db.after_crash.find_one({"_id": 1}) == {"_id": 1}


def test_postgres_restart_keeps_port_and_data(
    pg_cluster: PgServer, pg_conn: psycopg.Connection[Any], pg_dsn: str
) -> None:
    require_restartable(pg_cluster)
    pg_conn.execute("CREATE TABLE kept AS SELECT generate_series(1, 5) AS id")
    port = pg_cluster.port
    pg_conn.close()

    pg_cluster.restart()

    assert pg_cluster.port == port
    with psycopg.connect(pg_dsn) as conn:
        assert conn.execute("SELECT count(*) FROM kept").fetchone() == (5,)


def _listen() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    s.listen()
    return s


def test_secantus_moves_off_a_random_port_taken_before_it_started() -> None:
    """Parallel test workers pick free ports at the same time: the port chosen for a server can
    be bound by another process before the server starts. Then it starts on another port."""
    with _listen() as taken:
        server = SecantusServer()
        server.port = taken.getsockname()[1]  # what the race would have done
        try:
            server.start()
            assert server.port != taken.getsockname()[1]
            with MongoClient(server.uri, serverSelectionTimeoutMS=10_000) as client:
                assert client.admin.command("ping")["ok"] == 1.0
        finally:
            server.cleanup()


def test_secantus_on_a_chosen_port_that_is_taken_fails_with_the_log() -> None:
    with _listen() as taken:
        port = taken.getsockname()[1]
        server = SecantusServer(port=port)
        try:
            with pytest.raises(
                ServerError, match=f"exited with code 1 while starting on port {port}"
            ):
                server.start()
            assert server.port == port
            assert "Address already in use" in server.logfile.read_text()
        finally:
            server.cleanup()
