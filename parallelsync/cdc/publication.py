"""The publication that tells the slot which table's changes to decode.

`--slot` publishes the table under the slot's name before the slot exists, so that a later
`--resume` can read which rows changed in between (an exact resume) and `--changed-rows-collection`
can write them. Both need a publication; `plan_publication` decides at preflight, before anything
exists, which one the run uses and refuses what cannot work:

- parallelsync creates it (named after the slot, with a comment carrying `PUBLICATION_MARK`) when
  the role may: CREATE PUBLICATION ... FOR TABLE needs ownership of the table (and of every
  child it publishes) and CREATE on the database, or superuser;
- `--publication NAME` uses one the table's owner made; it must exist and publish every change of
  the relations the copy reads. parallelsync never drops it (only marked ones are ours);
- a publication already named like the slot is reused only when it publishes the table so.

A table is only published when decoding can name every changed row by the copy key, and a
publication cannot break the source's own writes: every relation read has REPLICA IDENTITY FULL,
or DEFAULT with a primary key that is the copy key. (Publishing updates of a table without replica
identity makes its UPDATEs and DELETEs fail on the source.)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.errors import SourceError, UsageError
from parallelsync.source.catalog import TableInfo
from parallelsync.source.connect import clean, connect

# The start of the comment on every publication parallelsync creates.
PUBLICATION_MARK = "created by parallelsync for replication slot"

# Each relation the publication would cover, with what decides whether it may be published:
# replica identity, a primary key, ownership. `%(all)s`: descendants too (the publication
# covers them unless created FOR TABLE ONLY).
_RELATIONS = """
WITH RECURSIVE tree(oid) AS (
    SELECT %(oid)s::oid
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.oid WHERE %(all)s
)
SELECT c.oid::int, format('%%I.%%I', n.nspname, c.relname), c.relkind::text, c.relreplident::text,
       EXISTS (SELECT 1 FROM pg_index x WHERE x.indrelid = c.oid AND x.indisprimary),
       pg_has_role(c.relowner, 'USAGE'), pg_get_userbyid(c.relowner)::text
FROM tree JOIN pg_class c ON c.oid = tree.oid JOIN pg_namespace n ON n.oid = c.relnamespace
ORDER BY c.oid
"""


@dataclass(frozen=True)
class Relation:
    oid: int
    display: str
    relkind: str
    replident: str  # d default (primary key), f full, i index, n nothing
    has_pk: bool
    owned: bool  # the role has its owner's privileges
    owner: str


@dataclass(frozen=True)
class PublicationPlan:
    """The publication a run uses: `create` when the run makes it (named after the slot)."""

    name: str
    create: bool
    only: bool  # FOR TABLE ONLY: the inheritance children are not read, so not published
    relids: frozenset[int]  # the relations whose changes are the copied table's


def relations(conn: psycopg.Connection[Any], table: TableInfo, *, only: bool) -> list[Relation]:
    rows = conn.execute(_RELATIONS, {"oid": table.oid, "all": not only}).fetchall()
    return [Relation(*row) for row in rows]


def unpublishable(table: TableInfo, rels: list[Relation], key: tuple[str, ...]) -> str | None:
    """Why changes of the table cannot be read by key (None: they can)."""
    if table.relkind not in ("r", "p"):
        return f"{table.display} is not a table (relkind {table.relkind!r}) and has no changes"
    if not key:
        return f"{table.display} has no key (its rows are named by ctid, which decoding lacks)"
    for rel in rels:
        if rel.relkind == "f":
            return f"{rel.display} is a foreign table, which a publication cannot include"
        if rel.relkind != "r" or rel.replident == "f":
            continue  # a partitioned parent holds no rows; FULL identity sends every column
        if rel.replident == "d" and rel.has_pk and key == table.primary_key:
            continue
        if not rel.has_pk or rel.replident == "n":
            return (
                f"{rel.display} has no primary key (nor REPLICA IDENTITY FULL): a publication "
                "would make its UPDATEs and DELETEs fail on the source"
            )
        return (
            f"the copy key ({', '.join(key)}) of {table.display} is not the primary key that "
            f"{rel.display}'s replica identity sends, so a changed row could not be named"
        )
    return None


def why_not_creatable(conn: psycopg.Connection[Any], rels: list[Relation]) -> str | None:
    row = conn.execute(
        "SELECT rolsuper, has_database_privilege(current_database(), 'CREATE'), "
        "current_user::text, current_database()::text FROM pg_roles WHERE rolname = current_user"
    ).fetchone()
    assert row is not None
    superuser, create, role, db = row
    if superuser:
        return None
    missing = [f"ownership of {r.display} (owner: {r.owner})" for r in rels if not r.owned]
    if not create:
        missing.append(f"CREATE on database {db}")
    if not missing:
        return None
    return f"the role {role} lacks {' and '.join(missing)}"


def check_covers(
    conn: psycopg.Connection[Any],
    name: str,
    table: TableInfo,
    rels: list[Relation],
    key: tuple[str, ...],
) -> None:
    """An existing publication must send every change of every relation the copy reads."""
    row = conn.execute(
        "SELECT pubinsert, pubupdate, pubdelete, pubtruncate FROM pg_publication "
        "WHERE pubname = %s",
        (name,),
    ).fetchone()
    assert row is not None
    kinds = [
        k for k, on in zip(("insert", "update", "delete", "truncate"), row, strict=True) if not on
    ]
    if kinds:
        raise SourceError(
            f"publication {name!r} does not publish {', '.join(kinds)}: changes of "
            f"{table.display} would be missed; ALTER PUBLICATION {name} SET (publish = 'insert, "
            "update, delete, truncate'), or use another publication"
        )
    new = conn.info.server_version >= 150000  # row filters and column lists
    extra = ", rowfilter, attnames" if new else ", NULL, NULL"
    published = {
        int(oid): (rowfilter, attnames)
        for oid, rowfilter, attnames in conn.execute(
            "SELECT format('%%I.%%I', schemaname, tablename)::regclass::oid::int"
            + extra
            + " FROM pg_publication_tables WHERE pubname = %s",
            (name,),
        ).fetchall()
    }
    stored = [r for r in rels if r.relkind == "r"]
    if table.oid in published:  # publish_via_partition_root, or a plain table
        checked = [(table.display, published[table.oid])]
    else:
        absent = [r.display for r in stored if r.oid not in published]
        if absent or not stored:
            raise SourceError(
                f"publication {name!r} does not publish {', '.join(absent) or table.display}: "
                f"ALTER PUBLICATION {name} ADD TABLE {table.display} (as the table's owner), or "
                "use a publication that does"
            )
        checked = [(r.display, published[r.oid]) for r in stored]
    for display, (rowfilter, attnames) in checked:
        if rowfilter is not None:
            raise SourceError(
                f"publication {name!r} publishes only the rows of {display} matching "
                f"WHERE {rowfilter}: changes of other rows would be missed; use a publication "
                "without a row filter"
            )
        lacking = [k for k in key if attnames is not None and k not in attnames]
        if lacking:
            raise SourceError(
                f"publication {name!r} does not send column(s) {', '.join(lacking)} of {display} "
                "(its column list), so a changed row could not be named; use a publication that "
                "sends the key"
            )


def plan_publication(
    conn: psycopg.Connection[Any],
    table: TableInfo,
    key: tuple[str, ...],
    *,
    slot: str,
    only: bool,
    publication: str | None,
    needed_by: list[str],
    log: Any,
) -> PublicationPlan | None:
    """The publication of a new `--slot` copy, or why there can be none (before anything exists).

    `needed_by`: the requested features that cannot work without one (their flags); with none, a
    table that cannot be published is only told, since the slot alone still records the LSN."""
    rels = relations(conn, table, only=only)
    relids = frozenset({table.oid, *(r.oid for r in rels)})
    why = unpublishable(table, rels, key)
    if why is not None:
        if publication:
            needed_by = [*needed_by, f"--publication {publication}"]
        if needed_by:
            raise UsageError(
                f"{' and '.join(needed_by)} need(s) the changes of {table.display} from the "
                f"slot, which cannot name its changed rows: {why}. Give the table a primary key "
                "(or REPLICA IDENTITY FULL), or leave out " + " and ".join(needed_by)
            )
        log(
            f"note: {why}; the slot records the consistent LSN, but no publication is made: a "
            "--resume of this job gives per-range consistency, and --changed-rows-collection is "
            "not available"
        )
        return None
    name = publication or slot
    exists = conn.execute("SELECT 1 FROM pg_publication WHERE pubname = %s", (name,)).fetchone()
    if exists is not None:
        check_covers(conn, name, table, rels, key)
        return PublicationPlan(name, False, only, relids)
    if publication:
        raise SourceError(
            f"publication {publication!r} does not exist on the source: have the owner of "
            f"{table.display} run CREATE PUBLICATION {publication} FOR TABLE {table.display}, "
            "or leave out --publication to let parallelsync create one (as the table's owner)"
        )
    problem = why_not_creatable(conn, rels)
    if problem is not None:
        raise SourceError(
            f"--slot {slot} publishes {table.display} (CREATE PUBLICATION {slot} FOR TABLE ...) "
            "so that a --resume is exact and --changed-rows-collection can be written, but "
            f"{problem}. Have the table's owner run CREATE PUBLICATION <name> FOR TABLE "
            f"{table.display} and pass --publication <name>, or run the copy as the owner; "
            "nothing was created"
        )
    return PublicationPlan(name, True, only, relids)


def create_publication(dsn: str, table: TableInfo, plan: PublicationPlan) -> None:
    """Create the publication preflight planned (named after the slot), with our mark."""
    target = sql.SQL("ONLY {}" if plan.only else "{}").format(table.ident)
    with connect(dsn, autocommit=True) as conn:
        try:
            conn.execute(
                sql.SQL("CREATE PUBLICATION {} FOR TABLE {}").format(
                    sql.Identifier(plan.name), target
                )
            )
        except psycopg.Error as exc:
            raise SourceError(
                f"cannot create publication {plan.name!r} for {table.display}: "
                f"{clean(exc, dsn)}; have the table's owner create one and pass --publication"
            ) from None
        # The mark lets `slot drop` tell our publication from a user's of the same name.
        with contextlib.suppress(psycopg.Error):  # unmarked, it is only never dropped by us
            conn.execute(
                sql.SQL("COMMENT ON PUBLICATION {} IS {}").format(
                    sql.Identifier(plan.name), sql.Literal(f"{PUBLICATION_MARK} {plan.name}")
                )
            )


def published_relids(
    conn: psycopg.Connection[Any], table: TableInfo, *, only: bool
) -> frozenset[int]:
    """The relations whose changes are the copied table's (a resume's catch-up reads them)."""
    return frozenset({table.oid, *(r.oid for r in relations(conn, table, only=only))})


def drop_publication(dsn: str, name: str) -> None:
    """Drop a publication parallelsync created (its comment carries the mark); never a user's."""
    try:
        with connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT coalesce(obj_description(oid, 'pg_publication') LIKE %s, false) "
                "FROM pg_publication WHERE pubname = %s",
                (PUBLICATION_MARK + "%", name),
            ).fetchone()
            if row is not None and row[0]:
                conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(name)))
    except (psycopg.Error, SourceError):
        pass
