"""Connecting to PostgreSQL with failures turned into clear, password-free errors."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceConnectionLost, SourceError, UsageError
from parallelsync.redact import redact_dsn, remember, scrub_for, uri_needs_encoding

# Fail a wrong host fast instead of waiting for the OS's TCP timeout.
CONNECT_TIMEOUT_S = 15


# libpq ends the user info at the first '@' and a '/' before it ends the authority, so a raw '/'
# or '@' in a URI's password sends the connection to a wrong host, port or database.
ENCODING_HINT = (
    "; the password in the URI holds a '/', '@' or '%' that libpq cannot read as written: "
    "percent-encode it (/ as %2F, @ as %40, % as %25), or give it in PGPASSWORD or ~/.pgpass"
)


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection[Any]:
    kwargs.setdefault("connect_timeout", CONNECT_TIMEOUT_S)
    kwargs.setdefault("application_name", "parallelsync")
    remember(dsn)
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.ProgrammingError as exc:  # a malformed conninfo string
        raise UsageError(
            f"invalid PostgreSQL DSN {redact_dsn(dsn)}: {clean(exc, dsn)}{_hint(dsn)}"
        ) from None
    except psycopg.OperationalError as exc:
        raise SourceError(
            f"cannot connect to PostgreSQL ({redact_dsn(dsn)}): {clean(exc, dsn)}{_hint(dsn)}"
        ) from None


def execute(
    conn: psycopg.Connection[Any], query: str | sql.SQL | sql.Composed, params: Any = None
) -> psycopg.Cursor[Any]:
    """Run exactly one statement, with the extended query protocol.

    psycopg sends a statement without parameters with the simple query protocol, which runs every
    statement in the string; `--where` is pasted into queries as written, so with it
    `true); DROP TABLE t; SELECT (1` would run the DROP. A prepared statement (Parse) holds exactly
    one statement: the server refuses such a string ("cannot insert multiple commands into a
    prepared statement") instead of running any of it."""
    return conn.execute(query, params, prepare=True)


def _hint(dsn: str) -> str:
    return ENCODING_HINT if uri_needs_encoding(dsn) else ""


def clean(exc: BaseException, dsn: str) -> str:
    """The server's message without secrets and without libpq's multi-line noise."""
    text = scrub_for(str(exc), dsn).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return "; ".join(lines[:3]) if lines else type(exc).__name__


def classify(exc: psycopg.Error, dsn: str, what: str) -> SourceError:
    """Map a driver error to our hierarchy: a lost connection is worth a retry, the rest is not."""
    msg = f"{what}: {clean(exc, dsn)}"
    sqlstate = getattr(exc, "sqlstate", None) or ""
    if isinstance(exc, psycopg.OperationalError) and (
        sqlstate.startswith("08") or sqlstate in ("57P01", "57P02", "57P03") or not sqlstate
    ):
        return SourceConnectionLost(msg)
    return SourceError(msg)
