"""What a MongoDB URI says without connecting: the database named in its path."""

from __future__ import annotations

from urllib.parse import unquote


def uri_database(uri: str) -> str | None:
    """`mongodb://host/shop?x=1` -> "shop"; None when the URI names no database.

    The authority ends at the first "/" after the LAST "@" (a password may hold "/", "?" or
    "#" unescaped, which drivers accept)."""
    if "://" not in uri:
        return None
    rest = uri.split("://", 1)[1]
    at = rest.rfind("@")
    slash = rest.find("/", at + 1)
    if slash < 0:
        return None
    path = rest[slash + 1 :].split("?", 1)[0]
    return unquote(path) or None
