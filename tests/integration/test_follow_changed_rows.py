"""`follow --changed-rows-collection`: one refresh job per row each applied transaction changed,
its `key` built on the follow's own decoder with the BSON types of the documents' `_id` (int8,
text, uuid, composite keys); a replay writes no job twice. Real PostgreSQL and SecantusDB."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bson
import psycopg
import pytest
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from pymongo.database import Database

from tests.integration.cli_helpers import Run, copy_args, run_cli
from tests.integration.test_follow import _no_leftover_slot  # noqa: F401 (an autouse fixture)

RAW = CodecOptions(document_class=RawBSONDocument)

# name -> (columns, key types, the SQL of the i-th key's values)
KEYS: dict[str, tuple[list[str], str, Callable[[int], str]]] = {
    "int8": (["id"], "id int8", lambda i: str(i)),
    "text": (["id"], "id text", lambda i: f"'k{i}'"),
    "uuid": (["id"], "id uuid", lambda i: f"md5('{i}')::uuid"),
    "composite": (["a", "b"], "a int4, b text", lambda i: f"{i}, 'b{i}'"),
}


def follow_jobs(dsn: str, mongo_uri: str, db: str, table: str) -> Run:
    return run_cli(
        "follow", "--source", dsn, "--table", table, "--target", mongo_uri, "--db", db,
        "--slot", f"fol_cr_{table}", "--stop-at-end", "--changed-rows-collection", "refresh",
        "--json",
    )  # fmt: skip


@pytest.mark.parametrize("kind", list(KEYS))
def test_changed_row_keys_have_the_types_of_the_documents_ids(
    kind: str, pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str,
    mongo_db: Database[Any],
) -> None:  # fmt: skip
    cols, decl, key = KEYS[kind]
    table, names = f"t_{kind}", ", ".join(cols)

    def where(i: int) -> str:
        return f"WHERE ({names}) = ({key(i)})" if len(cols) > 1 else f"WHERE {cols[0]} = {key(i)}"

    pg_conn.execute(f"CREATE TABLE {table} ({decl}, v text, PRIMARY KEY ({names}))")
    for i in range(1, 11):
        pg_conn.execute(f"INSERT INTO {table} VALUES ({key(i)}, 'v{i}')")
    copy = run_cli(*copy_args(pg_dsn, table, mongo_uri, mongo_db.name, "--slot", f"fol_cr_{table}"))
    assert copy.rc == 0, copy.stderr
    pg_conn.execute(f"INSERT INTO {table} VALUES ({key(100)}, 'new')")
    pg_conn.execute(f"UPDATE {table} SET v = 'changed' {where(1)}")
    sets = ", ".join(f"{c} = {v}" for c, v in zip(cols, key(200).split(", "), strict=True))
    pg_conn.execute(f"UPDATE {table} SET {sets} {where(2)}")  # the key changes: old and new
    with pg_conn.transaction():  # two changes of one row in one transaction: one job
        pg_conn.execute(f"UPDATE {table} SET v = 'twice' {where(4)}")
        pg_conn.execute(f"UPDATE {table} SET v = 'twice again' {where(4)}")
    pg_conn.execute(f"DELETE FROM {table} {where(3)}")
    run = follow_jobs(pg_dsn, mongo_uri, mongo_db.name, table)
    assert run.rc == 0, run.stderr
    assert run.json["changed_rows"] == 6

    jobs = [bson.decode(d.raw) for d in mongo_db.get_collection("refresh", RAW).find()]
    docs = {
        repr(d["_id"]): d["_id"]
        for d in (bson.decode(r.raw) for r in mongo_db.get_collection(table, RAW).find())
    }
    assert len(jobs) == 6 and all(j["status"] == "PENDING" and j["source"] == table for j in jobs)
    assert all(j["job_id"].startswith("follow-") for j in jobs)
    present = 0
    for job in jobs:
        k = job["key"]
        assert list(k) == cols
        as_id = k if len(cols) > 1 else k[cols[0]]  # what the row's document has as _id
        if repr(as_id) in docs:  # same value, and the same BSON type (Int64, Binary(4), str...)
            present += 1
            doc_id = docs[repr(as_id)]
            pairs = zip(k.values(), doc_id.values(), strict=True) if len(cols) > 1 else [
                (as_id, doc_id)
            ]  # fmt: skip
            for a, b in pairs:
                assert type(a) is type(b) and a == b, (a, b)
    assert present == 4  # 100, 1, 200, 4 are rows; 2 (moved away) and 3 (deleted) are not
    # A second run has nothing new to apply: no job is added.
    again = follow_jobs(pg_dsn, mongo_uri, mongo_db.name, table)
    assert again.rc == 0, again.stderr
    assert mongo_db.refresh.count_documents({}) == 6
