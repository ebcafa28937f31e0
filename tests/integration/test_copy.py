"""End-to-end full sync against a real PostgreSQL and a real MongoDB-protocol server."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import struct
import threading
import uuid
from typing import Any

import psycopg
import pytest
from bson.binary import UuidRepresentation
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli

CODEC = CodecOptions(tz_aware=True, uuid_representation=UuidRepresentation.STANDARD)
UTC = dt.UTC


def ms(value: dt.datetime) -> dt.datetime:
    """What a BSON date keeps of a timestamp: UTC, milliseconds (floor)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


def expected_value(v: Any) -> Any:
    if isinstance(v, list):
        return [expected_value(x) for x in v]
    if isinstance(v, dt.datetime):
        return ms(v)
    if isinstance(v, dt.date):
        return dt.datetime(v.year, v.month, v.day, tzinfo=UTC)
    if isinstance(v, decimal.Decimal):
        return v
    if isinstance(v, memoryview):
        return bytes(v)
    return v


def same(a: Any, b: Any) -> bool:
    if isinstance(a, Decimal128):
        a = a.to_decimal()
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, decimal.Decimal) and isinstance(b, decimal.Decimal):
        return a == b or (a.is_nan() and b.is_nan())
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, int) and isinstance(b, int):  # bson's Int64 is an int subclass
        return int(a) == int(b)
    return bool(a == b) and type(a) is type(b)


def assert_collection_equals_table(
    conn: psycopg.Connection[Any], db: Database[Any], table: str, collection: str, key: str = "id"
) -> int:
    cur = conn.execute(f"SELECT * FROM {table} ORDER BY {key}")
    names = [d.name for d in cur.description or ()]
    float4_columns = [d.name for d in cur.description or () if d.type_code == 700]
    rows = cur.fetchall()
    docs = {d["_id"]: d for d in db.get_collection(collection, codec_options=CODEC).find()}
    assert len(docs) == len(rows)
    for row in rows:
        values = dict(zip(names, row, strict=True))
        doc = docs[values[key]]
        expected = {"_id": values.pop(key), **{k: expected_value(v) for k, v in values.items()}}
        for k in float4_columns:
            if expected[k] is not None:  # float4 is widened exactly, not via its shortest text
                expected[k] = struct.unpack("<f", struct.pack("<f", expected[k]))[0]
        assert list(doc.keys()) == list(expected.keys()), (doc.keys(), expected.keys())
        for k, v in expected.items():
            assert same(doc[k], v), (k, doc[k], v)
    return len(rows)


def no_temp_collections(db: Database[Any]) -> bool:
    return not [n for n in db.list_collection_names() if "__psync_tmp_" in n]


ALL_TYPES_DDL = """
CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy');
CREATE TABLE all_types (
    id int8 PRIMARY KEY,
    b bool, i2 int2, i4 int4, i8 int8, f4 float4, f8 float8,
    n numeric, n2 numeric(12,2), t text, vc varchar(20), bc char(5), nm name, m mood,
    by bytea, u uuid, d date, ts timestamp, tstz timestamptz, j json, jb jsonb,
    ai int4[], at text[], an numeric[], au uuid[], ats timestamptz[], ab bool[], af float8[],
    ajb jsonb[], ip inet
);
"""


def fill_all_types(conn: psycopg.Connection[Any], n: int) -> None:
    rows = []
    for i in range(1, n + 1):
        if i % 17 == 0:  # a row of NULLs
            rows.append((i,) + (None,) * 29)
            continue
        rows.append(
            (
                i,
                i % 2 == 0,
                (i % 65535) - 32768,
                -i * 1000,
                i * 10**12,
                i / 3.0,
                -i / 7.0,
                decimal.Decimal(f"{i}.{i:04d}") * (-1 if i % 3 else 1),
                decimal.Decimal(f"{i * 13}.25"),
                f"text {i} ünïcødé ✓",
                f"vc{i}",
                f"c{i % 100}",
                f"name{i}",
                ["sad", "ok", "happy"][i % 3],
                bytes([i % 256, 0, 255]) * (i % 4),
                uuid.UUID(int=i * 7919),
                dt.date(2000, 1, 1) + dt.timedelta(days=i * 37 - 5000),
                dt.datetime(2021, 3, 4, 5, 6, 7, 123456) + dt.timedelta(seconds=i * 3601),
                dt.datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
                + dt.timedelta(minutes=i * 11),
                psycopg.types.json.Json({"k": i, "s": "x", "l": [1, 2, {"z": None}]}),
                psycopg.types.json.Jsonb({"nested": {"a": [i, "b", True, 1.5]}, "e": {}}),
                [i, None, -i],
                ["a", "", None, "ü"],
                [decimal.Decimal("1.5"), decimal.Decimal(-i)],
                [uuid.UUID(int=i)],
                [dt.datetime(2020, 1, 1, tzinfo=UTC)],
                [True, False],
                [0.5, -2.0],
                [psycopg.types.json.Jsonb({"x": i})],
                f"10.0.{i % 256}.1",
            )
        )
    with conn.cursor() as cur:
        cur.executemany("INSERT INTO all_types VALUES (" + ", ".join(["%s"] * 30) + ")", rows)


def test_multi_worker_copy_equals_table_for_every_type(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute(ALL_TYPES_DDL)
    fill_all_types(pg_conn, 400)
    pg_conn.execute("ANALYZE all_types")
    run = run_cli(
        *copy_args(pg_dsn, "all_types", mongo_uri, mongo_db.name, "--workers", "3", "--json")
    )
    assert run.rc == 0, run.stderr
    out = run.json
    assert out["status"] == "FINISHED"
    assert out["rows"] == 400 and out["docs"] == 400
    assert out["consistent_lsn"] is None
    assert out["target"] == f"{mongo_db.name}.all_types"
    # ip (inet) arrives through its own codec; compare the rest field by field
    docs = {d["_id"]: d for d in mongo_db.get_collection("all_types", codec_options=CODEC).find()}
    assert docs[3]["ip"] == "10.0.3.1"
    pg_conn.execute("ALTER TABLE all_types DROP COLUMN ip")
    mongo_db.all_types.update_many({}, {"$unset": {"ip": ""}})
    assert assert_collection_equals_table(pg_conn, mongo_db, "all_types", "all_types") == 400
    assert no_temp_collections(mongo_db)
    job = mongo_db.parallelsync_jobs.find_one({"_id": out["job_id"]})
    assert job is not None
    assert job["status"] == "FINISHED"
    assert job["totals"]["rows"] == 400
    assert job["target_count"] == 400 and job["source_count"] == 400
    assert job["progress"] == 1.0
    assert sum(r["rows"] for r in job["ranges"]) == 400
    assert all(r["status"] == "DONE" and r["attempts"] == 1 for r in job["ranges"])
    assert "password" not in str(job["source"]["dsn"])


def test_skewed_integer_keys_give_balanced_ranges(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE skew (id int8 PRIMARY KEY, v int4)")
    pg_conn.execute("INSERT INTO skew SELECT g, g % 100 FROM generate_series(1, 3000) g")
    pg_conn.execute("INSERT INTO skew SELECT 5000000000 + g, 1 FROM generate_series(1, 3000) g")
    pg_conn.execute("ANALYZE skew")
    plan = run_cli(
        "plan",
        "--source",
        pg_dsn,
        "--table",
        "skew",
        "--workers",
        "2",
        "--json",
    )
    assert plan.rc == 0, plan.stderr
    ranges = plan.json["ranges"]
    assert len(ranges) >= 8
    est = [r["estimated_rows"] for r in ranges]
    assert max(est) <= 3 * (sum(est) / len(est))
    run = run_cli(*copy_args(pg_dsn, "skew", mongo_uri, mongo_db.name, "--workers", "2", "--json"))
    assert run.rc == 0, run.stderr
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None
    counts = [r["rows"] for r in job["ranges"]]
    assert sum(counts) == 6000
    assert max(counts) <= 3 * (6000 / len(counts))
    assert assert_collection_equals_table(pg_conn, mongo_db, "skew", "skew") == 6000


def test_where_copies_only_matching_rows(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE orders (id int4 PRIMARY KEY, status text, total numeric(10,2))")
    pg_conn.execute(
        "INSERT INTO orders SELECT g, CASE WHEN g % 3 = 0 THEN 'open' ELSE 'closed' END, g * 1.5 "
        "FROM generate_series(1, 900) g"
    )
    run = run_cli(
        *copy_args(
            pg_dsn,
            "orders",
            mongo_uri,
            mongo_db.name,
            "--workers",
            "2",
            "--where",
            "status = 'open'",
            "--collection",
            "open_orders",
            "--json",
        )
    )
    assert run.rc == 0, run.stderr
    assert run.json["rows"] == 300
    ids = sorted(d["_id"] for d in mongo_db.open_orders.find({}, {"_id": 1}))
    assert ids == list(range(3, 901, 3))
    doc = mongo_db.open_orders.find_one({"_id": 9})
    assert doc == {"_id": 9, "status": "open", "total": Decimal128("13.50")}


def test_empty_table_gives_empty_collection(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE empty_t (id int4 PRIMARY KEY, v text)")
    mongo_db.empty_t.insert_many([{"_id": 1, "v": "stale"}, {"_id": 2}])
    # Issue 11: an empty source replaces a non-empty target only when asked to.
    refused = run_cli(*copy_args(pg_dsn, "empty_t", mongo_uri, mongo_db.name, "--workers", "3"))
    assert refused.rc == 2 and "--allow-empty" in refused.stderr
    assert mongo_db.empty_t.count_documents({}) == 2
    run = run_cli(
        *copy_args(pg_dsn, "empty_t", mongo_uri, mongo_db.name, "--workers", "3", "--json",
                   "--allow-empty")
    )  # fmt: skip
    assert run.rc == 0, run.stderr
    assert run.json["rows"] == 0
    assert "empty_t" in mongo_db.list_collection_names()
    assert mongo_db.empty_t.count_documents({}) == 0
    assert no_temp_collections(mongo_db)


def test_existing_target_is_replaced_and_keeps_its_indexes(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute('CREATE SCHEMA "Sales Data"')
    pg_conn.execute(
        'CREATE TABLE "Sales Data"."Customer List" (id int4 PRIMARY KEY, "e mail" text, city text)'
    )
    pg_conn.execute(
        """INSERT INTO "Sales Data"."Customer List" SELECT g, 'u' || g || '@x.org', 'c' || (g % 7)
           FROM generate_series(1, 200) g"""
    )
    mongo_db.customers.insert_many(
        [{"_id": i, "old": True, "e mail": f"old{i}"} for i in range(500, 520)]
    )
    mongo_db.customers.create_index([("city", 1), ("_id", -1)], name="city_id")
    mongo_db.customers.create_index("e mail", unique=True, name="email_unique")
    run = run_cli(
        *copy_args(
            pg_dsn,
            '"Sales Data"."Customer List"',
            mongo_uri,
            mongo_db.name,
            "--collection",
            "customers",
            "--workers",
            "2",
            "--json",
        )
    )
    assert run.rc == 0, run.stderr
    assert mongo_db.customers.count_documents({}) == 200
    assert mongo_db.customers.count_documents({"old": True}) == 0
    assert mongo_db.customers.find_one({"_id": 7}) == {"_id": 7, "e mail": "u7@x.org", "city": "c0"}
    indexes = {ix["name"]: ix for ix in mongo_db.customers.list_indexes()}
    assert set(indexes) == {"_id_", "city_id", "email_unique"}
    assert dict(indexes["city_id"]["key"]) == {"city": 1, "_id": -1}
    assert indexes["email_unique"].get("unique") is True
    assert no_temp_collections(mongo_db)


def test_all_workers_read_one_snapshot_under_concurrent_transfers(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """Money moves between accounts during the copy; the copy must still sum to the total."""
    n, total = 4000, 4000 * 1000
    pg_conn.execute("CREATE TABLE accounts (id int4 PRIMARY KEY, balance int8 NOT NULL)")
    pg_conn.execute(f"INSERT INTO accounts SELECT g, 1000 FROM generate_series(1, {n}) g")
    pg_conn.execute("ANALYZE accounts")
    stop = threading.Event()
    transfers = [0]
    late: list[int] = []  # accounts touched after the swap was seen (may miss the refresh jobs)

    def transfer() -> None:
        import random

        rnd = random.Random(7)
        with psycopg.connect(pg_dsn, autocommit=False) as c:
            while not stop.is_set():
                a, b = rnd.randint(1, n), rnd.randint(1, n)
                amount = rnd.randint(1, 500)
                c.execute("UPDATE accounts SET balance = balance - %s WHERE id = %s", (amount, a))
                c.execute("UPDATE accounts SET balance = balance + %s WHERE id = %s", (amount, b))
                c.commit()
                transfers[0] += 1
                if "accounts" in mongo_db.list_collection_names():
                    late.extend((a, b))  # the swap happened: stop before the refresh jobs are read
                    return

    thread = threading.Thread(target=transfer)
    thread.start()
    try:
        run = run_cli(
            *copy_args(
                pg_dsn,
                "accounts",
                mongo_uri,
                mongo_db.name,
                "--workers",
                "3",
                "--slot",
                "snap_test_slot",
                "--batch-rows",
                "200",
                "--changed-rows-collection",
                "refresh_jobs",
                "--json",
            )
        )
    finally:
        stop.set()
        thread.join()
    assert run.rc == 0, run.stderr
    assert transfers[0] > 20, "the transfers did not overlap the copy"
    out = run.json
    assert out["consistent_lsn"] and "/" in out["consistent_lsn"]
    assert out["slot"] == "snap_test_slot"
    agg = list(
        mongo_db.accounts.aggregate(
            [{"$group": {"_id": None, "s": {"$sum": "$balance"}, "c": {"$sum": 1}}}]
        )
    )
    assert agg[0]["c"] == n
    assert agg[0]["s"] == total
    # Downstream refresh jobs: every account that changed after the snapshot has one.
    jobs = list(mongo_db.refresh_jobs.find())
    assert out["changed_rows"] == len(jobs) > 0
    assert all(j["job_id"] == out["job_id"] and j["status"] == "PENDING" for j in jobs)
    refreshed = {int(j["key"]["id"]) for j in jobs}
    copied = {d["_id"]: d["balance"] for d in mongo_db.accounts.find()}
    now = dict(pg_conn.execute("SELECT id, balance FROM accounts").fetchall())
    differing = {k for k, v in now.items() if copied[k] != v}
    assert differing, "no account changed after the snapshot"
    assert differing - set(late) <= refreshed
    slot = pg_conn.execute(
        "SELECT confirmed_flush_lsn::text FROM pg_replication_slots "
        "WHERE slot_name = 'snap_test_slot'"
    ).fetchone()
    assert slot is not None and slot[0] == out["consistent_lsn"]
    job = mongo_db.parallelsync_jobs.find_one({"_id": out["job_id"]})
    assert job is not None and job["snapshot"]["consistent_lsn"] == out["consistent_lsn"]


@pytest.mark.parametrize(
    ("case", "expect_rc", "expect_msg"),
    [
        ("missing_table", 3, "table 'no_such_table' does not exist"),
        ("missing_schema", 3, "schema 'nope' does not exist"),
        ("wrong_dsn", 3, "cannot connect to PostgreSQL"),
        ("unreachable_mongo", 4, "cannot reach MongoDB"),
        ("zero_workers", 2, "--workers must be at least 1"),
        ("bad_where", 2, "invalid --where"),
    ],
)
def test_bad_input_fails_clearly_and_leaves_target_untouched(
    case: str,
    expect_rc: int,
    expect_msg: str,
    pg_conn: psycopg.Connection[Any],
    pg_dsn: str,
    mongo_uri: str,
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO src SELECT g, 'new' FROM generate_series(1, 50) g")
    mongo_db.src.insert_many([{"_id": i, "v": "old"} for i in range(10)])
    before = list(mongo_db.src.find().sort("_id"))
    source, table, target, extra = pg_dsn, "src", mongo_uri, ["--workers", "2"]
    if case == "missing_table":
        table = "no_such_table"
    elif case == "missing_schema":
        table = "nope.src"
    elif case == "wrong_dsn":
        source = "postgresql://nobody:topsecret@127.0.0.1:1/x"
    elif case == "unreachable_mongo":
        target = "mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=1000"
    elif case == "zero_workers":
        extra = ["--workers", "0"]
    elif case == "bad_where":
        extra = ["--where", "v = = 'x'"]
    run = run_cli(*copy_args(source, table, target, mongo_db.name, "--collection", "src", *extra))
    assert run.rc == expect_rc, run.stderr
    assert expect_msg in run.stderr
    assert "Traceback" not in run.stderr
    assert "topsecret" not in run.stderr
    assert list(mongo_db.src.find().sort("_id")) == before
    assert no_temp_collections(mongo_db)


def test_module_and_console_script_agree() -> None:
    import shutil
    import subprocess
    import sys

    script = shutil.which("parallelsync") or str(
        __import__("pathlib").Path(sys.executable).parent / "parallelsync"
    )
    a = subprocess.run([script, "--version"], capture_output=True, text=True, check=False)
    b = run_cli("--version")
    assert a.returncode == 0 and b.rc == 0
    assert a.stdout.strip() == b.stdout.strip() == "parallelsync 0.1.0"


def test_status_lists_the_jobs_of_a_target(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE tiny (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO tiny SELECT g, 'v' FROM generate_series(1, 30) g")
    ok = run_cli(*copy_args(pg_dsn, "tiny", mongo_uri, mongo_db.name, "--json"))
    bad = run_cli(*copy_args(pg_dsn, "tiny", mongo_uri, mongo_db.name, "--where", "1/0 = 1"))
    assert ok.rc == 0 and bad.rc != 0
    listing = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, "--json")
    assert listing.rc == 0, listing.stderr
    jobs = __import__("json").loads(listing.stdout)
    assert jobs[-1]["_id"] == ok.json["job_id"] and jobs[-1]["status"] == "FINISHED"
    assert jobs[-1]["totals"]["rows"] == 30
    text = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, "--collection", "tiny")
    assert f"{ok.json['job_id']}  FINISHED  {mongo_db.name}.tiny  rows 30" in text.stdout
    one = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, "--job", "nope")
    assert one.rc == 2 and "no job nope" in one.stderr
