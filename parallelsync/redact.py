"""Removes secrets from connection strings before they reach logs, job documents or messages."""

from __future__ import annotations

import re

from psycopg.conninfo import conninfo_to_dict, make_conninfo

# The password runs to the LAST '@' of the authority: an unescaped '@' in it must not leave a tail.
_URI_USERINFO = re.compile(
    r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:@/]*)(?P<password>:[^/?#]*)?@", re.I
)
_KV_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.I)


def redact_uri(uri: str) -> str:
    """`scheme://user:secret@host` -> `scheme://user:***@host`; query-string passwords too."""
    out = _URI_USERINFO.sub(
        lambda m: f"{m['scheme']}{m['user']}:***@" if m["password"] else m.group(0), uri
    )
    out = re.sub(
        r"([?&](?:password|sslpassword|tlsCertificateKeyFilePassword)=)[^&]*",
        r"\1***",
        out,
        flags=re.I,
    )
    return out


def redact_dsn(dsn: str) -> str:
    """A PostgreSQL DSN (URI or key=value) without its password."""
    if "://" in dsn:
        return redact_uri(dsn)
    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return _KV_PASSWORD.sub(r"\1***", dsn)
    if "password" in params:
        params["password"] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def scrub(text: str, *secrets: str | None) -> str:
    """Replace any literal secret (e.g. a password echoed by a driver) in a message."""
    for s in secrets:
        if s:
            text = text.replace(s, "***")
    return text


def dsn_password(dsn: str) -> str | None:
    try:
        value = conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
    return None if value is None else str(value)
