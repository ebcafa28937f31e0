"""Parsing of user-supplied table names (`schema.table`, with PostgreSQL quoting rules)."""

from __future__ import annotations

from parallelsync.errors import UsageError


def split_qualified(name: str) -> tuple[str | None, str, bool]:
    """Split `[schema.]table` into (schema, table, quoted).

    Unquoted parts fold to lower case as PostgreSQL does; `"Mixed Case"` parts keep their case
    and may contain dots and doubled quotes. `quoted` tells whether any part was quoted, so the
    catalog lookup can fall back to the exact spelling for unquoted mixed-case names.
    """
    parts: list[str] = []
    quoted = False
    i, n = 0, len(name)
    while i < n:
        if name[i] == '"':
            quoted = True
            j, buf = i + 1, []
            while True:
                if j >= n:
                    raise UsageError(f"table name {name!r} has an unterminated double quote")
                if name[j] == '"':
                    if j + 1 < n and name[j + 1] == '"':
                        buf.append('"')
                        j += 2
                        continue
                    break
                buf.append(name[j])
                j += 1
            parts.append("".join(buf))
            i = j + 1
        else:
            j = name.find(".", i)
            j = n if j < 0 else j
            parts.append(name[i:j].strip())
            i = j
            if i < n and name[i] == ".":
                # the dot is consumed below
                pass
        if i < n:
            if name[i] != ".":
                raise UsageError(f"table name {name!r} is not of the form [schema.]table")
            i += 1
            if i >= n:
                raise UsageError(f"table name {name!r} ends with a dot")
    if not parts or any(p == "" for p in parts) or len(parts) > 2:
        raise UsageError(f"table name {name!r} is not of the form [schema.]table")
    if len(parts) == 1:
        return None, parts[0], quoted
    return parts[0], parts[1], quoted


def fold(part: str, quoted: bool) -> str:
    return part if quoted else part.lower()
