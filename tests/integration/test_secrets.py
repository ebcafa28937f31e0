"""Awkward passwords through the real command line: a refused connection's message, and a whole
successful copy (stdout, stderr, the job document, `status` and `status --job`) show no form of
the secret: not as written, not percent-encoded, not decoded.

The PostgreSQL side uses the role `ps_pw`, the only one the private cluster authenticates with
scram (tests/servers.py); each test sets its password and puts the usual one back afterwards. The
MongoDB side creates a user of its own in the test's database.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote, quote_plus, unquote

import psycopg
import pytest
from psycopg import sql
from pymongo import MongoClient
from pymongo.database import Database

from parallelsync.errors import SourceError, TargetError, UsageError
from parallelsync.redact import forget_all
from parallelsync.source.connect import connect as pg_connect
from parallelsync.targets.mongodb.client import connect as mongo_connect
from tests.integration.cli_helpers import copy_args, run_cli
from tests.servers import PASSWORD_ROLE, PASSWORD_ROLE_PASSWORD, PgServer

PASSWORDS = [
    "pw#Secret1",
    "pw?Secret2",
    "pw%Secret3",
    "pw/Secret4",
    "pw@Secret5",
    "p:w-Secret6",
    "pw%40enc7",
    "pässwörd€8",
    "pw&Secret9=x",
    "pw+Secret10",
    "it's a \\Secret11",  # quote, spaces, backslash
]
# The role's password while a test gives a wrong one.
OTHER_PASSWORD = "the-Right-One-42"


def variants(password: str) -> set[str]:
    decoded = unquote(password)
    forms = {password, decoded, quote(password, safe=""), quote_plus(password)}
    forms |= {quote(decoded, safe=""), quote_plus(decoded)}
    return forms


def assert_nowhere(text: str, password: str) -> None:
    for form in variants(password):
        assert form not in text, f"{form!r} (a form of {password!r}) leaked:\n{text}"


def kv_quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


DsnForm = Callable[[PgServer, str, str], str]


def uri_raw(pg: PgServer, db: str, pw: str) -> str:
    return f"postgresql://{PASSWORD_ROLE}:{pw}@{pg.host}:{pg.port}/{db}"


def uri_encoded(pg: PgServer, db: str, pw: str) -> str:
    return f"postgresql://{PASSWORD_ROLE}:{quote(pw, safe='')}@{pg.host}:{pg.port}/{db}"


def uri_query(pg: PgServer, db: str, pw: str) -> str:
    return (
        f"postgresql://{PASSWORD_ROLE}@{pg.host}:{pg.port}/{db}"
        f"?password={quote(pw, safe='')}&sslmode=disable"
    )


def key_value(pg: PgServer, db: str, pw: str) -> str:
    return f"host={pg.host} port={pg.port} dbname={db} user={PASSWORD_ROLE} password={kv_quote(pw)}"


FORMS: dict[str, DsnForm] = {
    "uri_raw": uri_raw,
    "uri_encoded": uri_encoded,
    "uri_query": uri_query,
    "key_value": key_value,
}


def libpq_reads_raw(pw: str) -> bool:
    """As meant, raw in a URI (a '%' always starts an escape, a space is refused)."""
    return not libpq_misreads_raw(pw) and "%" not in pw and " " not in pw


def libpq_misreads_raw(pw: str) -> bool:
    """libpq cannot read these raw in a URI's user info: it ends at the first '@', a '/' ends
    the authority, and a '%' must start an escape."""
    return re.search(r"[/@]|%(?![0-9A-Fa-f]{2})", pw) is not None


@pytest.fixture
def role(pg_cluster: PgServer, pg_conn: psycopg.Connection[Any]) -> Iterator[Callable[[str], None]]:
    """Sets `ps_pw`'s password for this test; the usual one is put back afterwards."""
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY, v text)")
    pg_conn.execute("INSERT INTO src SELECT g, 'v' || g FROM generate_series(1, 30) g")
    pg_conn.execute(sql.SQL("GRANT SELECT ON src TO {}").format(sql.Identifier(PASSWORD_ROLE)))

    def set_password(pw: str) -> None:
        pg_cluster.execute(
            sql.SQL("ALTER ROLE {} PASSWORD {}").format(
                sql.Identifier(PASSWORD_ROLE), sql.Literal(pw)
            )
        )

    try:
        yield set_password
    finally:
        set_password(PASSWORD_ROLE_PASSWORD)


@pytest.fixture
def mongo_user(
    mongo_client: MongoClient[dict[str, Any]], mongo_db: Database[Any]
) -> Iterator[Callable[..., str]]:
    """Creates a user in the test's database with a given password; returns its URI."""
    created: list[str] = []
    host, port = next(iter(mongo_client.nodes))

    def make(pw: str, given: str | None = None) -> str:
        name = f"app{len(created)}"
        mongo_db.command("createUser", name, pwd=pw, roles=["dbOwner"])
        created.append(name)
        shown = quote_plus(pw if given is None else given)
        return f"mongodb://{name}:{shown}@{host}:{port}/?authSource={mongo_db.name}"

    try:
        yield make
    finally:
        for name in created:
            mongo_db.command("dropUser", name)


def pg_database(pg_dsn: str) -> str:
    return pg_dsn.rsplit("/", 1)[1]


@pytest.fixture
def clean_registry() -> Iterator[None]:
    """In-process connects remember their secrets (redact.py); forget them afterwards."""
    forget_all()
    try:
        yield
    finally:
        forget_all()


@pytest.mark.parametrize("password", PASSWORDS)
def test_every_form_of_a_refused_password_fails_cleanly(
    password: str, pg_cluster: PgServer, pg_dsn: str, role: Callable[[str], None],
    clean_registry: None,
) -> None:  # fmt: skip
    """The role's password is another one: each way of writing this one fails against the real
    server, with the usual message (or what to do) and no form of the secret in it. The same
    password, right, connects in each form libpq reads it in."""
    db = pg_database(pg_dsn)
    role(OTHER_PASSWORD)
    for name, form in FORMS.items():
        with pytest.raises((SourceError, UsageError)) as info:
            pg_connect(form(pg_cluster, db, password)).close()
        msg = str(info.value)
        assert_nowhere(msg, password)
        if name == "uri_raw" and libpq_misreads_raw(password):
            assert "percent-encode it (/ as %2F, @ as %40, % as %25)" in msg, msg
        elif name != "uri_raw" or libpq_reads_raw(password):
            assert f'password authentication failed for user "{PASSWORD_ROLE}"' in msg, msg
    role(password)
    for name, form in FORMS.items():
        if name != "uri_raw" or libpq_reads_raw(password):
            pg_connect(form(pg_cluster, db, password)).close()


# Through the real command line: what libpq cannot read as written (exit 2 or 3 with the hint,
# fragments of the secret in libpq's host name), and a plain refusal of a unicode password.
CLI_REFUSED = [
    ("pw%Secret3", "uri_raw", 2),
    ("pw@Secret5", "uri_raw", 3),
    ("pässwörd€8", "key_value", 3),
]


@pytest.mark.parametrize(("password", "form", "rc"), CLI_REFUSED)
def test_a_refused_connection_via_the_cli_shows_no_secret(
    password: str, form: str, rc: int, pg_cluster: PgServer, pg_dsn: str,
    role: Callable[[str], None], mongo_uri: str, mongo_db: Database[Any],
) -> None:  # fmt: skip
    role(OTHER_PASSWORD)
    source = FORMS[form](pg_cluster, pg_database(pg_dsn), password)
    run = run_cli(*copy_args(source, "src", mongo_uri, mongo_db.name))
    assert run.rc == rc, run.stderr
    assert "Traceback" not in run.stderr
    assert "cannot connect to PostgreSQL" in run.stderr or "invalid PostgreSQL DSN" in run.stderr
    assert_nowhere(run.stdout + run.stderr, password)
    if form == "uri_raw":
        assert "percent-encode it" in run.stderr, run.stderr
    assert mongo_db.list_collection_names() == []


# One copy per case: the PostgreSQL password in a form libpq reads as meant (raw where it can),
# and another awkward password for the MongoDB user.
SUCCESS = [
    ("pw#Secret1", "uri_raw", "p:w-Secret6"),
    ("pw?Secret2", "uri_raw", "pw%40enc7"),
    ("pw%Secret3", "uri_query", "pw&Secret9=x"),
    ("pw/Secret4", "uri_encoded", "pw+Secret10"),
    ("pw@Secret5", "key_value", "pw#Secret1"),
    ("pässwörd€8", "uri_raw", "pw?Secret2"),
    ("it's a \\Secret11", "key_value", "pw/Secret4"),
]


@pytest.mark.parametrize(("password", "form", "mongo_password"), SUCCESS)
def test_a_successful_copy_shows_the_passwords_nowhere(
    password: str,
    form: str,
    mongo_password: str,
    pg_cluster: PgServer,
    pg_dsn: str,
    role: Callable[[str], None],
    mongo_user: Callable[..., str],
    mongo_db: Database[Any],
) -> None:
    role(password)
    source = FORMS[form](pg_cluster, pg_database(pg_dsn), password)
    target = mongo_user(mongo_password)
    run = run_cli(*copy_args(source, "src", target, mongo_db.name, "--json", "--debug"))
    assert run.rc == 0, run.stderr
    assert mongo_db.src.count_documents({}) == 30
    job_id = run.json["job_id"]
    job = mongo_db.parallelsync_jobs.find_one({"_id": job_id})
    assert job is not None and job["status"] == "FINISHED"
    assert "***" in job["source"]["dsn"] and "***" in job["target"]["uri"]
    assert PASSWORD_ROLE in job["source"]["dsn"]
    one = run_cli("status", "--target", target, "--db", mongo_db.name, "--job", job_id)
    assert one.rc == 0 and job_id in one.stdout, one.stderr
    texts = [run.stdout, run.stderr, str(job), one.stdout, one.stderr]
    if form == "uri_raw" and "#" in password:
        listing = run_cli("status", "--target", target, "--db", mongo_db.name)
        assert listing.rc == 0 and job_id in listing.stdout, listing.stderr
        texts += [listing.stdout, listing.stderr]
    for text in texts:
        assert_nowhere(text, password)
        assert_nowhere(text, mongo_password)


# pymongo warns about the "option" a raw '?' in the password starts (the test wants that case).
@pytest.mark.filterwarnings("ignore:Unknown option:UserWarning")
@pytest.mark.parametrize("password", PASSWORDS)
def test_mongodb_refusals_show_no_form_of_the_password(
    password: str, mongo_user: Callable[..., str], clean_registry: None
) -> None:
    """A wrong password, encoded as it should be (the server refuses: exit 4), and the same
    written raw (pymongo may refuse to parse it: exit 2 with what to do)."""
    wrong = mongo_user(OTHER_PASSWORD, password)
    with pytest.raises(TargetError) as refused:
        mongo_connect(wrong, timeout_ms=5000).close()
    assert "refused the connection: authentication failed" in str(refused.value)
    assert_nowhere(str(refused.value), password)
    raw = wrong.replace(quote_plus(password), password)
    try:
        mongo_connect(raw, timeout_ms=5000).close()
    except UsageError as exc:
        assert "percent-encode the user name and password" in str(exc)
        assert_nowhere(str(exc), password)
    except TargetError as exc:  # pymongo read it (as another password): refused
        assert_nowhere(str(exc), password)
    else:
        pytest.fail(f"{raw} connected with a wrong password")


@pytest.mark.parametrize("password", ["pw?Secret2", "pw#Secret1"])
def test_a_refused_mongodb_uri_via_the_cli_shows_no_secret(
    password: str,
    pg_dsn: str,
    pg_conn: psycopg.Connection[Any],
    mongo_user: Callable[..., str],
    mongo_db: Database[Any],
) -> None:
    pg_conn.execute("CREATE TABLE src (id int4 PRIMARY KEY)")
    raw = mongo_user(OTHER_PASSWORD, password).replace(quote_plus(password), password)
    run = run_cli(*copy_args(pg_dsn, "src", raw, mongo_db.name))
    # '?' ends pymongo's host list (exit 2, encode it); '#' it reads, and the server refuses
    assert run.rc == (2 if "?" in password else 4), run.stderr
    assert "Traceback" not in run.stderr
    assert_nowhere(run.stdout + run.stderr, password)
    assert [n for n in mongo_db.list_collection_names() if n != "parallelsync_locks"] == []


def test_status_redacts_job_documents_written_by_older_versions(
    mongo_uri: str, mongo_db: Database[Any]
) -> None:
    """Job documents from before this fix hold `source.dsn` verbatim: `status` shows them
    redacted, and scrubs the secret from every field (an old error message, say)."""
    dsn = "postgresql://app:pw#OldSecret1@db.example.com/shop"
    mongo_db.parallelsync_jobs.insert_one(
        {
            "_id": "old",
            "status": "FAILED",
            "source": {"dsn": dsn, "table": "src"},
            "target": {"uri": "mongodb://u:m%2FOldSecret2@h/", "db": "x", "collection": "src"},
            "error": "cannot connect: password pw#OldSecret1 and m/OldSecret2 refused",
            "started_at": None,
        }
    )
    for args in (["--job", "old"], []):
        run = run_cli("status", "--target", mongo_uri, "--db", mongo_db.name, *args)
        assert run.rc == 0, run.stderr
        assert "OldSecret" not in run.stdout + run.stderr, run.stdout
        assert "FAILED" in run.stdout and "***" in run.stdout
