"""Replication slots on the source: advancing the job's slot, and finding and dropping left-over
ones.

A logical slot keeps every WAL segment from its restart point on until a consumer confirms it,
so a slot nobody reads (a copy whose coordinator died, a consumer that went away) fills the
source's disk. `list_slots` shows each logical slot with the WAL it retains; copy's preflight
and `status` report them, and `parallelsync slot drop` removes one with its publication.

Privileges: `pg_replication_slots` and `pg_publication` are readable by every role; dropping a
slot needs the REPLICATION attribute (or superuser), dropping a publication its ownership.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql

from parallelsync.cdc.publication import PUBLICATION_MARK
from parallelsync.errors import SourceError
from parallelsync.redact import redact_dsn
from parallelsync.source.connect import clean, connect
from parallelsync.source.snapshot import APP_NAME_MAX, HOLDER_APP_PREFIX, check_slot_name

# On a standby pg_current_wal_lsn() fails; the replay position is how far WAL has come there.
# pg_stat_activity shows application_name of every session to every role.
_SLOTS = """
SELECT s.slot_name, s.plugin, s.slot_type, s.database, s.active, s.active_pid,
       pg_wal_lsn_diff(
           CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
                ELSE pg_current_wal_lsn() END,
           s.restart_lsn)::bigint,
       s.restart_lsn::text, s.confirmed_flush_lsn::text,
       s.database = current_database(),
       p.oid IS NOT NULL,
       coalesce(obj_description(p.oid, 'pg_publication') LIKE %(mark)s, false),
       h.pid
FROM pg_replication_slots s
LEFT JOIN pg_publication p ON p.pubname = s.slot_name AND s.database = current_database()
LEFT JOIN LATERAL (
    SELECT a.pid FROM pg_stat_activity a
    WHERE a.backend_type = 'walsender'
      AND a.application_name = left(%(app)s || s.slot_name, %(app_max)s)
    LIMIT 1
) h ON true
WHERE s.slot_type = 'logical' AND (%(names)s::text[] IS NULL OR s.slot_name = ANY(%(names)s))
ORDER BY s.slot_name
"""


@dataclass(frozen=True)
class SlotInfo:
    name: str
    plugin: str | None
    database: str | None
    active: bool
    active_pid: int | None
    # A running copy's snapshot holder (its walsender): the slot then shows as inactive, but it
    # is the copy's, not abandoned.
    held_by: int | None
    retained_bytes: int | None  # WAL kept from restart_lsn on; None when the slot reserves none
    restart_lsn: str | None
    confirmed_flush_lsn: str | None
    # A publication of the slot's name: only visible from the slot's own database (None there
    # elsewhere); `publication_ours` when parallelsync created it (its comment says so).
    publication: bool | None
    publication_ours: bool | None

    @property
    def in_use(self) -> bool:
        return self.active or self.held_by is not None

    @property
    def retained(self) -> str:
        return "unknown" if self.retained_bytes is None else human_bytes(self.retained_bytes)

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"retained": self.retained}


def human_bytes(n: float) -> str:
    """Decimal units, as the copy summary's MB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def list_slots(conn: psycopg.Connection[Any], names: Iterable[str] | None = None) -> list[SlotInfo]:
    """Every logical slot on the source's server (or those named), with its retained WAL."""
    params = {
        "mark": PUBLICATION_MARK + "%",
        "names": None if names is None else list(names),
        "app": HOLDER_APP_PREFIX,
        "app_max": APP_NAME_MAX,
    }
    out = []
    for row in conn.execute(_SLOTS, params).fetchall():
        name, plugin, _, database, active, pid, retained, restart, flush, here, pub, ours, held = (
            row
        )
        out.append(
            SlotInfo(
                name, plugin, database, bool(active), pid, held,
                None if retained is None else int(retained), restart, flush,
                bool(pub) if here else None, bool(ours) if here and pub else None,
            )
        )  # fmt: skip
    return out


def slot_states(dsn: str, names: Iterable[str]) -> dict[str, SlotInfo]:
    """The named slots that still exist, by name (for `status`)."""
    wanted = sorted(set(names))
    if not wanted:
        return {}
    with connect(dsn, autocommit=True) as conn:
        return {s.name: s for s in list_slots(conn, wanted)}


def drop_command(name: str, dsn: str) -> str:
    return f"parallelsync slot drop {name} --source {shlex.quote(redact_dsn(dsn))}"


def report_idle_slots(dsn: str, log: Callable[[str], None], keep: str | None = None) -> None:
    """One warning line per inactive logical slot (the WAL it holds back); never fails a run."""
    try:
        with connect(dsn, autocommit=True) as conn:
            slots = list_slots(conn)
            db_row = conn.execute("SELECT current_database()").fetchone()
    except (psycopg.Error, SourceError) as exc:
        log(f"warning: could not list the source's replication slots: {exc}")
        return
    here = db_row[0] if db_row else None
    for s in slots:
        if s.in_use or s.name == keep:
            continue
        where = "" if s.database == here else f" (database {s.database})"
        source = drop_command(s.name, dsn) if s.database == here else (
            f"parallelsync slot drop {s.name} --source <a DSN for database {s.database}>"
        )  # fmt: skip
        log(
            f"warning: slot {s.name}{where} is inactive and retains {s.retained} of WAL; "
            f"if no consumer needs it: {source}"
        )


@dataclass(frozen=True)
class Dropped:
    slot: str
    publication: str  # "dropped", "absent", or why it was kept


def drop_abandoned_slot(dsn: str, name: str) -> Dropped:
    """Drop an inactive logical slot and the publication parallelsync created under its name."""
    check_slot_name(name)
    with connect(dsn, autocommit=True) as conn:
        found = list_slots(conn, [name])
        if not found:
            kind = conn.execute(
                "SELECT slot_type FROM pg_replication_slots WHERE slot_name = %s", (name,)
            ).fetchone()
            if kind is not None:
                raise SourceError(
                    f"replication slot {name!r} is a {kind[0]} slot, not one parallelsync "
                    f"creates; drop it with SELECT pg_drop_replication_slot('{name}') if it is "
                    "abandoned"
                )
            raise SourceError(f"replication slot {name!r} does not exist on the source")
        slot = found[0]
        if slot.publication is None:
            raise SourceError(
                f"replication slot {name!r} belongs to database {slot.database!r}: run slot drop "
                f"with a --source DSN for that database, so its publication is dropped too"
            )
        if slot.active:
            raise SourceError(
                f"replication slot {name!r} is active (used by process {slot.active_pid}): a "
                "consumer is reading it; stop that consumer first, or leave the slot alone"
            )
        if slot.held_by is not None:
            raise SourceError(
                f"replication slot {name!r} belongs to a running copy (process {slot.held_by} "
                "holds its snapshot): it is not abandoned; leave it, or stop that copy first"
            )
        try:
            conn.execute("SELECT pg_drop_replication_slot(%s)", (name,))
        except psycopg.errors.InsufficientPrivilege as exc:
            raise SourceError(
                f"dropping replication slot {name!r} needs the REPLICATION attribute or "
                f"superuser: {clean(exc, dsn)}"
            ) from None
        except psycopg.Error as exc:
            raise SourceError(f"cannot drop replication slot {name!r}: {clean(exc, dsn)}") from None
        return Dropped(name, _drop_own_publication(conn, dsn, slot))


def _drop_own_publication(conn: psycopg.Connection[Any], dsn: str, slot: SlotInfo) -> str:
    if not slot.publication:
        return "absent"
    if not slot.publication_ours:
        return f"parallelsync did not create it; DROP PUBLICATION {slot.name} if nothing uses it"
    try:
        conn.execute(sql.SQL("DROP PUBLICATION {}").format(sql.Identifier(slot.name)))
    except psycopg.Error as exc:
        return f"dropping it failed: {clean(exc, dsn)}"
    return "dropped"


def advance_slot(dsn: str, slot: str, lsn: str) -> None:
    """The target now reflects `lsn`: change capture must start there, not at the old point."""
    with connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_replication_slot_advance(%s, %s::pg_lsn)", (slot, lsn))
