"""`parallelsync slot list|drop`: the source's logical replication slots and the WAL each holds.

A slot left by a copy whose coordinator died keeps WAL on the source until it is dropped; copy's
preflight and `status` point here. SQL and privileges: cdc/slots.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from parallelsync.cdc.slots import SlotInfo, drop_abandoned_slot, list_slots
from parallelsync.cli.output import print_json
from parallelsync.config import load_file, merge, options_for
from parallelsync.errors import EXIT_OK, UsageError
from parallelsync.source.connect import connect

SLOT_OPTIONS = options_for("slot")
_NAMES = {o.name for o in SLOT_OPTIONS}


def run_slot(cli: Mapping[str, Any], *, as_json: bool) -> int:
    file = {k: v for k, v in load_file(cli.get("config")).items() if k in _NAMES}
    values = merge(SLOT_OPTIONS, cli, os.environ, file)
    dsn = values["source"]
    if not dsn:
        raise UsageError(
            "slot needs --source (or PARALLELSYNC_SOURCE / config key 'source'): the PostgreSQL "
            "DSN of the source"
        )
    if cli["slot_action"] == "drop":
        dropped = drop_abandoned_slot(dsn, str(cli["slot_name"]))
        if as_json:
            print_json({"slot": dropped.slot, "dropped": True, "publication": dropped.publication})
            return EXIT_OK
        print(f"dropped replication slot {dropped.slot}")
        if dropped.publication == "dropped":
            print(f"dropped publication {dropped.slot}")
        elif dropped.publication != "absent":
            print(f"kept publication {dropped.slot}: {dropped.publication}")
        return EXIT_OK
    with connect(dsn, autocommit=True) as conn:
        slots = list_slots(conn)
    if as_json:
        print_json([s.as_json() for s in slots])
    else:
        print_table(slots)
    return EXIT_OK


def _active(s: SlotInfo) -> str:
    if s.active:
        return f"yes (pid {s.active_pid})"
    return "no" if s.held_by is None else f"held by a running copy (pid {s.held_by})"


def _publication(s: SlotInfo) -> str:
    if s.publication is None:
        return "? (other database)"
    if not s.publication:
        return "no"
    return "yes (parallelsync)" if s.publication_ours else "yes"


def print_table(slots: list[SlotInfo]) -> None:
    if not slots:
        print("no logical replication slots on the source")
        return
    head = ("slot", "plugin", "database", "active", "retained WAL", "confirmed_flush_lsn",
            "publication")  # fmt: skip
    rows = [
        (
            s.name,
            s.plugin or "-",
            s.database or "-",
            _active(s),
            s.retained,
            s.confirmed_flush_lsn or "-",
            _publication(s),
        )
        for s in slots
    ]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip())
