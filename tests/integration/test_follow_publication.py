"""`follow` on a slot whose publication is missing: created (marked as ours) only when the slot
holds no change of the table a publication made now would miss; otherwise refused with the
reason; a role that may not create it gets the fix. Real PostgreSQL and SecantusDB."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from pymongo.database import Database

from parallelsync.cdc.publication import PUBLICATION_MARK
from tests.integration.cli_helpers import copy_args, run_cli
from tests.integration.test_follow import (  # noqa: F401 (an autouse fixture)
    DDL,
    _no_leftover_slot,
    assert_exact,
    follow,
)
from tests.servers import PgServer


def publications(pg: psycopg.Connection[Any]) -> list[tuple[str, str | None]]:
    return [
        (str(n), c)
        for n, c in pg.execute(
            "SELECT pubname, obj_description(oid, 'pg_publication') FROM pg_publication "
            "ORDER BY pubname"
        ).fetchall()
    ]


def copied_with_bare_slot(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, db: Database[Any], slot: str
) -> None:
    """The table copied, then a slot made by hand (no publication), at a quiet moment."""
    pg_conn.execute(DDL)
    assert run_cli(*copy_args(pg_dsn, "orders", mongo_uri, db.name)).rc == 0
    pg_conn.execute("SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", (slot,))


def test_missing_publication_is_created_when_no_change_is_lost(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    copied_with_bare_slot(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_lp_a")
    # Another table's change before the publication: PostgreSQL 15 stops a pgoutput stream on
    # it ('publication does not exist'); the slot is advanced past it, losing nothing of orders.
    pg_conn.execute("INSERT INTO audit (what) VALUES ('before the publication')")
    first = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_lp_a", "--stop-at-end", "--json")
    assert first.rc == 0, first.stderr
    assert publications(pg_conn) == [("fol_lp_a", f"{PUBLICATION_MARK} fol_lp_a")]
    pg_conn.execute("UPDATE orders SET note = 'after' WHERE id <= 3")
    pg_conn.execute("DELETE FROM orders WHERE id = 4")
    second = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_lp_a", "--stop-at-end", "--json")
    assert second.rc == 0, second.stderr
    assert (second.json["transactions"], second.json["changes"]) == (2, 4)
    assert assert_exact(pg_conn, pg_dsn, mongo_uri, mongo_db) == 39
    # `slot drop` removes the publication with the slot: it is marked as ours.
    dropped = run_cli("slot", "drop", "fol_lp_a", "--source", pg_dsn)
    assert dropped.rc == 0, dropped.stderr
    assert publications(pg_conn) == []


def test_named_missing_publication_is_created_under_its_name(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    copied_with_bare_slot(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_lp_b")
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_lp_b", "--publication", "fol_lp_pub",
                 "--stop-at-end")  # fmt: skip
    assert run.rc == 0, run.stderr
    assert publications(pg_conn) == [("fol_lp_pub", f"{PUBLICATION_MARK} fol_lp_b")]


def test_missing_publication_is_refused_when_the_slot_holds_changes_it_would_miss(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    copied_with_bare_slot(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_lp_c")
    pg_conn.execute("UPDATE orders SET note = 'unpublished' WHERE id IN (1, 2)")
    run = follow(pg_dsn, mongo_uri, mongo_db.name, "fol_lp_c", "--stop-at-end")
    assert run.rc == 3, run.stderr
    assert (
        "publication 'fol_lp_c' does not exist, and follow does not create it: slot "
        "'fol_lp_c' holds 2 change(s) of public.orders made before any publication of it"
        in run.stderr
    )
    assert "Copy the table again with a new --slot" in run.stderr
    assert publications(pg_conn) == []  # nothing made, no temporary slot left either
    slots = pg_conn.execute("SELECT slot_name FROM pg_replication_slots").fetchall()
    assert [s for (s,) in slots if s.startswith("parallelsync_check_")] == []
    assert mongo_db.orders.find_one({"_id": 1})["note"] == "note 1"


@pytest.fixture
def reader(pg_cluster: PgServer, pg_conn: psycopg.Connection[Any]) -> Iterator[str]:
    """A role with REPLICATION and SELECT on orders, which the superuser owns."""
    name = f"fr_{uuid.uuid4().hex[:8]}"
    pg_conn.execute(f"CREATE ROLE {name} LOGIN REPLICATION")
    try:
        yield pg_cluster.dsn(str(pg_conn.info.dbname), user=name)
    finally:
        pg_conn.execute(f"DROP OWNED BY {name}")
        pg_conn.execute(f"DROP ROLE {name}")


def test_missing_publication_for_a_role_that_cannot_create_it_names_the_fix(
    reader: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    copied_with_bare_slot(pg_conn, pg_dsn, mongo_uri, mongo_db, "fol_lp_d")
    role = psycopg.conninfo.conninfo_to_dict(reader)["user"]
    pg_conn.execute(f"GRANT SELECT ON orders TO {role}")
    run = follow(reader, mongo_uri, mongo_db.name, "fol_lp_d", "--stop-at-end")
    assert run.rc == 3, run.stderr
    assert (
        f"publication 'fol_lp_d' does not exist, and follow cannot create it: the role {role} "
        "lacks ownership of public.orders (owner: postgres)" in run.stderr
    )
    assert "CREATE PUBLICATION fol_lp_d FOR TABLE public.orders" in run.stderr
    assert publications(pg_conn) == []
