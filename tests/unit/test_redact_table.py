"""Awkward passwords, every way a user can write them: none survives redaction or scrubbing.

For each password the table builds the connection strings a user could write (PostgreSQL URI raw
and percent-encoded, key=value quoted, a query-string password, MongoDB URIs with one or several
hosts, mongodb+srv) and checks that no form of the secret (as written, percent-decoded,
percent-encoded) is left in the redacted string, and that a driver message quoting any of those
forms is scrubbed clean.
"""

from __future__ import annotations

from urllib.parse import quote, quote_plus, unquote

import pytest

from parallelsync.errors import SourceError
from parallelsync.redact import (
    forget_all,
    redact_dsn,
    redact_uri,
    remember,
    scrub_for,
    scrub_known,
    secrets_of,
)

# Passwords that broke or could break redaction: URI delimiters, the percent sign, an encoded
# '@', a colon, a unicode password. (Quotes and spaces: the key=value table below.)
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
]


def variants(password: str) -> set[str]:
    """Every form the secret can take in a message: as written, decoded and encoded."""
    decoded = unquote(password)
    forms = {password, decoded, quote(password, safe=""), quote_plus(password)}
    forms |= {quote(decoded, safe=""), quote_plus(decoded)}
    return {f for f in forms if len(f) >= 4}


def assert_no_secret(text: str, password: str) -> None:
    for form in variants(password):
        assert form not in text, f"{form!r} (a form of {password!r}) is in {text!r}"


def uris(password: str) -> list[str]:
    enc = quote(password, safe="")
    return [
        f"postgresql://app:{password}@db.example.com:5432/shop",
        f"postgresql://app:{enc}@db.example.com:5432/shop",
        f"postgres://app:{password}@db.example.com/shop?sslmode=require",
        f"postgresql://app@db.example.com/shop?password={enc}&sslmode=require",
        f"postgresql://app@db.example.com/shop?sslpassword={enc}",
        f"mongodb://app:{password}@m1.example.com:27017/?authSource=admin",
        f"mongodb://app:{quote_plus(password)}@m1:27017,m2:27017,m3:27017/db?replicaSet=rs0",
        f"mongodb+srv://app:{password}@cluster0.example.net/?retryWrites=true",
        f"mongodb://m1/?tls=true&tlsCertificateKeyFilePassword={enc}&w=1",
    ]


@pytest.mark.parametrize("password", PASSWORDS)
def test_uri_forms_are_redacted(password: str) -> None:
    for uri in uris(password):
        shown = redact_uri(uri)
        assert_no_secret(shown, password)
        assert "***" in shown, shown
        # redact_dsn takes URIs too (the --source of a copy)
        assert_no_secret(redact_dsn(uri), password)


@pytest.mark.parametrize("password", PASSWORDS)
def test_driver_messages_quoting_any_form_are_scrubbed(password: str) -> None:
    """Whatever libpq or pymongo echo (the token as written, its decoded value, an encoded copy,
    or a fragment after libpq split the URI at a '/' or '@'), nothing of the secret is left."""
    for uri in uris(password):
        for form in variants(password):
            message = f'connection failed: invalid token "{form}" near host'
            assert_no_secret(scrub_for(message, uri), password)
        fragment = password.replace("@", "/").rsplit("/", 1)[-1]
        if len(fragment) >= 4:
            message = f"failed to resolve host '{fragment}@127.0.0.1'"
            assert fragment not in scrub_for(message, uri)


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        # The userinfo runs to the LAST '@' after the scheme, whatever it contains.
        ("postgresql://app:pw#Secret1@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:pw?Secret2@h:5432/db", "postgresql://app:***@h:5432/db"),
        ("postgresql://app:pw/Secret4@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:pw@Secret5@h/db", "postgresql://app:***@h/db"),
        ("postgresql://app:p:w@h/db", "postgresql://app:***@h/db"),
        ("mongodb://app:pw#x@h1:1,h2:2/?replicaSet=r", "mongodb://app:***@h1:1,h2:2/?replicaSet=r"),
        ("mongodb+srv://app:pw/x@c.example.net/", "mongodb+srv://app:***@c.example.net/"),
        ("postgresql://h/db?password=a&b&sslmode=x", "postgresql://h/db?password=***&sslmode=x"),
        # no password: unchanged
        ("postgresql://app@h/db", "postgresql://app@h/db"),
        ("mongodb://h1:1,h2:2/db?w=1", "mongodb://h1:1,h2:2/db?w=1"),
        ("null:", "null:"),
        ("file:/tmp/out", "file:/tmp/out"),
    ],
)
def test_redacted_uri_keeps_what_is_not_secret(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown


# key=value DSNs: quotes, backslashes and spaces (as libpq reads them).
KV = [
    ("host=h user=app password='a b\\'c Secret' dbname=db", "a b'c Secret"),
    ("host=h user=app password=pw#Secret1 dbname=db", "pw#Secret1"),
    ("host=h password='it''s' user=app", None),  # not libpq syntax: still nothing shown
    ("host=h user=app password = 'spaced Secret' port=5432", "spaced Secret"),
    ("host=h user=app password='pässwörd €' dbname=db", "pässwörd €"),
    ("host=h user=app sslpassword=keySecret dbname=db", "keySecret"),
    ("host=h password='unterminated Secret dbname=db", None),  # malformed: regex fallback
    ("host=h password=kvSecret port", None),  # malformed: regex fallback
]


@pytest.mark.parametrize(("dsn", "parsed"), KV)
def test_key_value_forms_are_redacted(dsn: str, parsed: str | None) -> None:
    shown = redact_dsn(dsn)
    assert "***" in shown
    for word in ("Secret", "it''s", "pässwörd", "kvSecret", "keySecret"):
        assert word not in shown, shown
    assert "host=h" in shown or "host='h'" in shown
    if parsed is not None:
        # libpq's parsed value is one of the forms scrubbed from messages
        assert parsed in secrets_of(dsn)
        assert parsed not in scrub_for(f"password {parsed} was refused", dsn)


def test_secrets_of_a_uri_without_password_is_empty() -> None:
    assert secrets_of("postgresql://app@h/db") == []
    assert secrets_of("mongodb://h1,h2/?replicaSet=r") == []
    assert secrets_of("host=h user=app dbname=db") == []


def test_remembered_secrets_are_scrubbed_from_every_error() -> None:
    """Errors are scrubbed against every connection string the process used, so a driver
    message that reaches one through a path without its own scrub still shows no secret."""
    forget_all()
    try:
        remember("postgresql://app:pw%23Remembered1@h/db", "mongodb://u:m%2FRemembered2@h/")
        err = SourceError('server said: password "pw#Remembered1" and m/Remembered2 rejected')
        assert "Remembered" not in str(err)
        assert "Remembered" not in scrub_known("x pw%23Remembered1 m%2FRemembered2 y")
        # errors cross process boundaries by pickling; the copy stays clean
        import pickle

        assert "Remembered" not in str(pickle.loads(pickle.dumps(err)))
    finally:
        forget_all()
