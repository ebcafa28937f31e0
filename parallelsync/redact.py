"""Removes secrets from connection strings before they reach logs, job documents or messages.

Two tools:

- `redact_uri` / `redact_dsn` turn a connection string into one that can be shown: the password
  of the user info, `password=` / `sslpassword=` of a key=value DSN and query-string passwords
  become `***`.
- `secrets_of` lists every form a connection string's secret can take in a driver's message
  (as written, percent-decoded, libpq's parsed value, re-encoded, and the fragments libpq reads
  as host, port or database when a raw '/' or '@' made it split the URI elsewhere);
  `scrub_for` replaces them in a text. `remember` keeps the secrets of every connection string
  this process uses, and every `ParallelSyncError` message is scrubbed of them (errors.py), so
  a driver message that reaches an error by a path without its own scrub still shows none.

The user info of a URI is taken to run to the LAST '@' after `scheme://`, whatever it contains:
libpq and pymongo disagree about raw '/', '?', '#' and '@' in a password, and if the guess is
wrong, a host is hidden too, which is the safe direction.
"""

from __future__ import annotations

import re
from typing import NamedTuple
from urllib.parse import quote, quote_plus, unquote, unquote_plus

_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*://", re.I)
_SECRET_KEYS = ("password", "sslpassword", "tlsCertificateKeyFilePassword")
# A query-string secret runs to the next `&name=` (a raw '&' inside it does not end it).
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:" + "|".join(_SECRET_KEYS) + r")=)(?P<value>(?:[^&]|&(?![\w.-]+=))*)", re.I
)
# key=value: a quoted value (an unterminated quote runs to the end, and anything glued to the
# closing quote is taken with it), or a bare word.
_KV_SECRET = re.compile(
    r"(?P<key>(?:ssl)?password\s*=\s*)(?P<value>'(?:[^'\\]|\\.)*(?:'|$)\S*|\S+)", re.I
)
# Where libpq or pymongo may cut a raw password into pieces that land in other fields.
_DELIMITERS = re.compile(r"[/?#@:&]")
# Fragments shorter than this are not scrubbed on their own: 1-2 characters would garble every
# message (the whole secret is always scrubbed, whatever its length).
MIN_FRAGMENT = 3


class UserInfo(NamedTuple):
    scheme: str  # "postgresql://"
    user: str
    password: str | None  # raw, as written; None when the user info has no ':'
    rest: str  # after the '@': hosts, path, query


def split_userinfo(uri: str) -> UserInfo | None:
    """The user info of `scheme://user:password@rest`, up to the last '@'; None without one."""
    m = _SCHEME.match(uri)
    if m is None:
        return None
    at = uri.rfind("@", m.end())
    if at < 0:
        return None
    user, sep, password = uri[m.end() : at].partition(":")
    return UserInfo(m.group(0), user, password if sep else None, uri[at + 1 :])


def redact_uri(uri: str) -> str:
    """`scheme://user:secret@host` -> `scheme://user:***@host`; query-string passwords too."""
    info = split_userinfo(uri)
    if info is not None and info.password is not None:
        head, rest = f"{info.scheme}{info.user}:***@", info.rest
    else:
        head, rest = "", uri
    return head + _QUERY_SECRET.sub(lambda m: f"{m['key']}***", rest)


def redact_dsn(dsn: str) -> str:
    """A PostgreSQL DSN (URI or key=value) without its password."""
    if _SCHEME.match(dsn):
        return redact_uri(dsn)
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    try:
        params = conninfo_to_dict(dsn)
    except Exception:
        return _KV_SECRET.sub(lambda m: f"{m['key']}***", dsn)
    for key in ("password", "sslpassword"):
        if key in params:
            params[key] = "***"
    return make_conninfo(**{k: str(v) for k, v in params.items() if v is not None})


def _forms(secret: str) -> set[str]:
    """The secret as written, decoded (URI and form style), re-encoded, and its fragments."""
    # Decoded twice: a literal 'a%40b' written encoded ('a%2540b') is still 'a@b' to a reader.
    decoded = {secret, unquote(secret), unquote_plus(secret)}
    decoded |= {unquote(d) for d in decoded}
    forms = set(decoded)
    for d in decoded:
        forms |= {quote(d, safe=""), quote_plus(d)}
    for f in list(forms):
        pieces = [p for p in _DELIMITERS.split(f) if len(p) >= MIN_FRAGMENT]
        if len(pieces) > 1 or (pieces and pieces[0] != f):
            forms.update(pieces)
    return {f for f in forms if f}


def secrets_of(conn: str) -> list[str]:
    """Every form the secret(s) of a DSN or URI can take in a message, longest first."""
    raw: set[str] = set()
    info = split_userinfo(conn)
    if info is not None and info.password:
        raw.add(info.password)
    rest = info.rest if info is not None else conn
    raw.update(m["value"] for m in _QUERY_SECRET.finditer(rest) if m["value"])
    if not _SCHEME.match(conn):
        for m in _KV_SECRET.finditer(conn):
            value = m["value"]
            raw.add(value)
            if value.startswith("'"):
                raw.add(re.sub(r"\\(.)", r"\1", value.strip("'")))
    written = set(raw)
    for parsed in _libpq_secrets(conn):
        # A value libpq cut out of a longer raw secret is one of its fragments, not the whole.
        if len(parsed) >= MIN_FRAGMENT or not any(parsed in w for w in written):
            raw.add(parsed)
    found: set[str] = set()
    for secret in raw:
        found |= _forms(secret)
    return sorted(found, key=lambda s: (-len(s), s))


def _libpq_secrets(conn: str) -> list[str]:
    """The password values as libpq parses them (when it can)."""
    if not conn or conn.startswith(("mongodb://", "mongodb+srv://", "null:", "file:")):
        return []
    from psycopg.conninfo import conninfo_to_dict

    try:
        params = conninfo_to_dict(conn)
    except Exception:
        return []
    return [str(params[k]) for k in ("password", "sslpassword") if params.get(k)]


def scrub(text: str, *secrets: str | None) -> str:
    """Replace any literal secret (e.g. a password echoed by a driver) in a message."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, "***")
    return text


def scrub_for(text: str, *conns: str) -> str:
    """A message without any form of the secrets of these connection strings."""
    return scrub(text, *(s for c in conns for s in secrets_of(c)))


# Every secret of every connection string this process has used (see the module docstring).
_KNOWN: set[str] = set()


def remember(*conns: str | None) -> None:
    for conn in conns:
        if conn:
            _KNOWN.update(secrets_of(conn))


def scrub_known(text: str) -> str:
    return scrub(text, *_KNOWN) if _KNOWN else text


def forget_all() -> None:
    """For tests: start from an empty set of known secrets."""
    _KNOWN.clear()


def uri_needs_encoding(conn: str) -> bool:
    """The user info holds a character libpq or pymongo cannot read raw ('/', '@', or a '%'
    that starts no percent-escape): a failed connection then gets a hint to encode it."""
    info = split_userinfo(conn)
    if info is None or info.password is None:
        return False
    userinfo = f"{info.user}:{info.password}"
    return bool(re.search(r"[/@]|%(?![0-9A-Fa-f]{2})", userinfo))
