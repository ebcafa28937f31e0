"""`parallelsync verify` and `copy --verify checksum`, end to end through the command line."""

from __future__ import annotations

from typing import Any

import psycopg
from pymongo.database import Database

from tests.integration.cli_helpers import copy_args, run_cli

HOOKS = "PARALLELSYNC_TEST_HOOKS"


def make_items(conn: psycopg.Connection[Any], rows: int = 2000) -> None:
    conn.execute("CREATE TABLE items (id int8 PRIMARY KEY, name text, qty int4)")
    conn.execute(
        "INSERT INTO items SELECT g, 'item ' || g, g %% 7 FROM generate_series(1, %s) g", (rows,)
    )
    conn.execute("ANALYZE items")


def verify_args(pg_dsn: str, mongo_uri: str, db: str, *extra: str) -> list[str]:
    return ["verify", "--source", pg_dsn, "--table", "items", "--target", mongo_uri, "--db", db,
            *extra]  # fmt: skip


def test_verify_reports_equal_then_names_the_differences(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_items(pg_conn)
    copied = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--workers", "2"))
    assert copied.rc == 0, copied.stderr

    same = run_cli(*verify_args(pg_dsn, mongo_uri, mongo_db.name, "--json"))
    assert same.rc == 0, same.stderr
    report = same.json
    assert report["status"] == "EQUAL"
    assert report["source"]["count"] == report["target_digest"]["count"] == 2000
    assert report["source"]["digest"] == report["target_digest"]["digest"]
    assert report["per_range"] is True and report["differing_ranges"] == []

    # The source moves on: one row changed, one deleted, one added.
    pg_conn.execute("UPDATE items SET qty = 999 WHERE id = 17")
    pg_conn.execute("DELETE FROM items WHERE id = 1500")
    pg_conn.execute("INSERT INTO items VALUES (5000, 'new', 1)")
    differ = run_cli(*verify_args(pg_dsn, mongo_uri, mongo_db.name, "--json"))
    assert differ.rc == 6, differ.stderr
    report = differ.json
    assert report["status"] == "DIFFERENT"
    assert report["source"]["count"] == 2000 and report["target_digest"]["count"] == 2000
    samples = report["samples"]
    different = [k for s in samples for k in s["sample_different"]]
    missing = [k for s in samples for k in s["sample_missing"]]
    extra = [k for s in samples for k in s["sample_extra"]]
    assert (different, missing, extra) == ([17], [5000], [1500])
    assert sorted(report["differing_ranges"]) == sorted(s["range"] for s in samples)

    # The plain text form says the same for a human.
    text = run_cli(*verify_args(pg_dsn, mongo_uri, mongo_db.name))
    assert text.rc == 6
    assert text.stdout.startswith(f"DIFFERENT: public.items -> {mongo_db.name}.items")
    assert "different [17]" in text.stdout and "missing [5000]" in text.stdout


def test_verify_of_a_missing_collection_says_so(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_items(pg_conn, 10)
    run = run_cli(*verify_args(pg_dsn, mongo_uri, mongo_db.name, "--collection", "nothing_here"))
    assert run.rc == 2, run.stderr
    assert f"the target collection {mongo_db.name}.nothing_here does not exist" in run.stderr
    assert "missing" not in run.stdout and run.stdout == ""


def test_copy_verify_checksum_passes_and_records_the_digests(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_items(pg_conn)
    run = run_cli(
        *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--verify", "checksum", "--json")
    )
    assert run.rc == 0, run.stderr
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["status"] == "FINISHED"
    check = job["verify"]
    assert check["mode"] == "checksum" and check["per_range"] is True
    assert check["source"] == check["target"] and check["source"]["count"] == 2000
    assert check["differing_ranges"] == []
    assert all("checksum" in r for r in job["ranges"])


def test_copy_verify_checksum_fails_when_the_temp_was_altered(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_items(pg_conn)
    mongo_db["items"].insert_one({"_id": "old target"})
    hook = {HOOKS: "before_checks=tests.hooks:alter_one_document"}
    run = run_cli(
        *copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--verify", "checksum", "--json"),
        env=hook,
    )
    assert run.rc == 6, run.stderr
    assert "checksum verification failed for ranges [" in run.stderr
    assert "nothing was swapped" in run.stderr
    assert run.json["status"] == "FAILED"
    # The target is exactly as it was, and the temp collection is gone.
    assert list(mongo_db["items"].find()) == [{"_id": "old target"}]
    assert [n for n in mongo_db.list_collection_names() if "__psync_tmp_" in n] == []
    job = mongo_db.parallelsync_jobs.find_one({"_id": run.json["job_id"]})
    assert job is not None and job["status"] == "FAILED"
    assert len(job["verify"]["differing_ranges"]) == 1

    # The same hook without --verify checksum: the counts still match, so the copy finishes.
    # This shows the hook really ran inside the job above and only the checksums caught it.
    plain = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--json"), env=hook)
    assert plain.rc == 0, plain.stderr
    assert mongo_db["items"].count_documents({"altered": True}) == 1


def test_plan_copy_and_verify_share_the_preflight(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    make_items(pg_conn, 10)
    bad = ["--where", "v = = 'x'"]
    plan = run_cli("plan", "--source", pg_dsn, "--table", "items", *bad)
    copy = run_cli(*copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, *bad))
    verify = run_cli(*verify_args(pg_dsn, mongo_uri, mongo_db.name, *bad))
    for run in (plan, copy, verify):
        assert run.rc == 2, run.stderr
        assert 'invalid --where "v = = \'x\'": syntax error at or near "="' in run.stderr
        assert "internal error" not in run.stderr
    missing = ["--table", "no_such_table"]
    for args in (
        ["plan", "--source", pg_dsn, *missing],
        ["copy", "--source", pg_dsn, *missing, "--target", mongo_uri, "--db", mongo_db.name],
        ["verify", "--source", pg_dsn, *missing, "--target", mongo_uri, "--db", mongo_db.name],
    ):
        run = run_cli(*args)
        assert run.rc == 3, run.stderr
        assert "table 'no_such_table' does not exist in the search path" in run.stderr


def test_each_subcommand_accepts_only_its_own_options(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str
) -> None:
    make_items(pg_conn, 10)
    plan = run_cli("plan", "--source", pg_dsn, "--table", "items", "--json")
    assert plan.rc == 0, plan.stderr  # no --target needed
    assert plan.json["table"] == "public.items" and plan.json["estimated_rows"] == 10
    for extra in (["--slot", "s1"], ["--target", "null:"], ["--resume", "last"]):
        run = run_cli("plan", "--source", pg_dsn, "--table", "items", *extra)
        assert run.rc == 2, run.stderr
        assert f"unrecognized arguments: {extra[0]}" in run.stderr
    verify = run_cli("verify", "--source", pg_dsn, "--table", "items", "--target", mongo_uri,
                     "--db", "x", "--slot", "s1")  # fmt: skip
    assert verify.rc == 2 and "unrecognized arguments: --slot" in verify.stderr
    abbreviated = run_cli("copy", "--source", pg_dsn, "--table", "items", "--target", "null:",
                          "--worker", "4")  # fmt: skip
    assert abbreviated.rc == 2 and "unrecognized arguments: --worker" in abbreviated.stderr


def test_debug_shows_the_traceback_of_a_failed_copy(
    pg_conn: psycopg.Connection[Any], pg_dsn: str, mongo_uri: str, mongo_db: Database[Any]
) -> None:
    pg_conn.execute("CREATE TABLE items (id int4 PRIMARY KEY, at timestamptz)")
    pg_conn.execute("INSERT INTO items VALUES (1, 'infinity')")
    args = copy_args(pg_dsn, "items", mongo_uri, mongo_db.name, "--infinity", "error")
    quiet = run_cli(*args)
    assert quiet.rc == 7, quiet.stderr
    assert "Traceback" not in quiet.stderr
    loud = run_cli(*args, "--debug")
    assert loud.rc == 7, loud.stderr
    assert "Traceback (most recent call last)" in loud.stderr
    assert "EncodeError" in loud.stderr
    assert "cannot encode column 'at'" in loud.stderr
