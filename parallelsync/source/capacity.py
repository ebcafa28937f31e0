"""How many workers the source can take: its free connection slots, less what the job needs.

`--workers 500` would otherwise open connections until the server refuses one ("too many
clients"), failing the job and, meanwhile, starving every other client of the database. So the
preflight reads the limits that apply to this session (max_connections less the reserved slots,
the role's and the database's CONNECTION LIMIT, which do not bind superusers) and what is in use,
and caps the workers with a message.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from parallelsync.errors import SourceError
from parallelsync.source.connect import execute

# Connections a copy holds besides its workers while they run: the snapshot holder, the guard
# (which also runs the snapshot count), and one more that is open next to the workers at either
# end: the planner's before they start, and after the last range (the workers still connected)
# a resume's catch-up or the --changed-rows-collection peek.
COPY_EXTRA = 3
# verify: the snapshot holder and the guard (the planner's closes before the workers start, and
# sample keys are read after they stopped).
VERIFY_EXTRA = 2


@dataclass(frozen=True)
class Capacity:
    free: int  # connections this role may still open (this session's own one not counted)
    limits: str  # which limit binds, for the message


def connection_capacity(conn: psycopg.Connection[Any]) -> Capacity:
    """Free slots as the server counts them, plus this (preflight) session's own, which closes
    before any worker starts. Replication connections (walsenders) have their own slots
    (max_wal_senders) and count only towards the role's and the database's limits."""
    # Without pg_read_all_stats, other roles' sessions show backend_type NULL: a row with a
    # database and a role is then taken for a client (a parallel worker counted too is harmless).
    row = execute(
        conn,
        """WITH a AS (
               SELECT usesysid, datid,
                      backend_type = 'client backend'
                      OR (backend_type IS NULL AND datid IS NOT NULL AND usesysid IS NOT NULL)
                      AS client,
                      coalesce(backend_type, '') = 'walsender' AS walsender
               FROM pg_stat_activity)
           SELECT current_setting('max_connections')::int,
                  current_setting('superuser_reserved_connections')::int
                    + coalesce(nullif(current_setting('reserved_connections', true), '')::int, 0),
                  (SELECT count(*) FROM a WHERE client)::int,
                  r.rolsuper, r.rolconnlimit,
                  (SELECT count(*) FROM a WHERE a.usesysid = r.oid
                   AND (client OR walsender))::int,
                  d.datconnlimit,
                  (SELECT count(*) FROM a WHERE a.datid = d.oid AND (client OR walsender))::int
           FROM pg_roles r, pg_database d
           WHERE r.rolname = current_user AND d.datname = current_database()""",
    ).fetchone()
    assert row is not None
    max_conn, reserved, used, superuser, rol_limit, rol_used, db_limit, db_used = row
    found = [(max_conn - reserved - used, f"max_connections {max_conn}, {reserved} reserved, "
              f"{used} in use")]  # fmt: skip
    if not superuser and rol_limit >= 0:
        found.append((rol_limit - rol_used, f"the role's connection limit {rol_limit}, "
                      f"{rol_used} in use"))  # fmt: skip
    if not superuser and db_limit >= 0:
        found.append((db_limit - db_used, f"the database's connection limit {db_limit}, "
                      f"{db_used} in use"))  # fmt: skip
    free, limits = min(found)
    return Capacity(max(0, free + 1), limits)


def cap_workers(cap: Capacity, workers: int, extra: int) -> tuple[int, str | None]:
    """(workers to start, the message when fewer than asked); raises when not one fits."""
    fits = cap.free - extra
    if fits < 1:
        raise SourceError(
            f"the source accepts only {cap.free} more connection(s) ({cap.limits}) and the job "
            f"needs {extra} besides its workers, so not one worker fits: close idle sessions, or "
            "raise max_connections or the role's / database's connection limit"
        )
    if workers <= fits:
        return workers, None
    return fits, (
        f"--workers {workers} capped to {fits}: the source accepts {cap.free} more connections "
        f"({cap.limits}) and the job needs {extra} besides its workers"
    )
