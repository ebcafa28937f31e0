"""`parallelsync status`: the job documents of a target database, newest first."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pymongo.collection import Collection

from parallelsync.cdc.lookups import KIND as LOOKUP_KIND
from parallelsync.config import load_file, merge, options_for
from parallelsync.errors import EXIT_OK, UsageError
from parallelsync.redact import scrub_for, scrub_known
from parallelsync.targets.base import LOCK_COLLECTION
from parallelsync.targets.mongodb.client import bounded, connect
from parallelsync.targets.mongodb.jobs import RUNNING
from parallelsync.targets.mongodb.lease import stale_reasons
from parallelsync.targets.names import check_collection_name, check_db_name

if TYPE_CHECKING:
    from parallelsync.cdc.slots import SlotInfo

STATUS_OPTIONS = options_for("status")
_NAMES = {o.name for o in STATUS_OPTIONS}
# The fields a status line shows; the whole document is printed with --job or --json.
SUMMARY_FIELDS = {
    "_id": 1, "status": 1, "target": 1, "source.table": 1, "source.schema": 1, "totals": 1,
    "progress": 1, "started_at": 1, "finished_at": 1, "elapsed": 1, "error": 1, "workers": 1,
    "snapshot.consistent_lsn": 1, "snapshot.slot": 1, "abandoned_slot": 1, "source.dsn": 1,
    "phases": 1, "coordinator": 1, "swap_outcome": 1,
}  # fmt: skip


def run_status(cli: Mapping[str, Any], *, as_json: bool) -> int:
    file = {k: v for k, v in load_file(cli.get("config")).items() if k in _NAMES}
    values = merge(STATUS_OPTIONS, cli, os.environ, file)
    if not values["target"] or not values["db"]:
        raise UsageError("status needs --target (a MongoDB URI) and --db")
    check_db_name(values["db"])
    check_collection_name("--stats-collection", values["stats_collection"], values["db"])
    client = connect(values["target"], call_timeout_s=values["target_timeout_seconds"])
    try:
        coll = client[values["db"]][values["stats_collection"]]
        with bounded(
            f"reading the job documents in {values['db']}.{coll.name}",
            values["target_timeout_seconds"],
        ):
            if cli.get("job"):
                job = coll.find_one({"_id": cli["job"]})
                if job is None:
                    raise UsageError(f"no job {cli['job']} in {values['db']}.{coll.name}")
                mark_stale([job], client[values["db"]][LOCK_COLLECTION])
                print(shown(job, json.dumps(job, default=str, indent=None if as_json else 2)))
                return EXIT_OK
            # Not a job: what a follow keeps for an exact replay (cdc/lookups.py).
            query: dict[str, Any] = {"kind": {"$ne": LOOKUP_KIND}}
            if values["collection"]:
                query["target.collection"] = values["collection"]
            limit = int(cli.get("limit") or 10)
            jobs = list(coll.find(query, SUMMARY_FIELDS).sort("started_at", -1).limit(limit))
            mark_stale(jobs, client[values["db"]][LOCK_COLLECTION])
    finally:
        client.close()
    states = slot_states(values["source"], filter(None, map(job_slot, jobs)))
    if as_json:
        for j in jobs:
            if values["source"] and job_slot(j):
                state = states.get(job_slot(j) or "")
                j["slot_state"] = state.as_json() if state else {"exists": False}
        print(shown(jobs, json.dumps(jobs, default=str)))
        return EXIT_OK
    if not jobs:
        print(f"no jobs in {values['db']}.{values['stats_collection']}")
    for j in jobs:
        totals = j.get("totals") or {}
        target = j.get("target") or {}
        status = str(j.get("status", "?"))
        if j.get("stale"):
            status += f" (stale: {j['stale_reason']})"
        line = (
            f"{j['_id']}  {status:<8}  {target.get('db')}.{target.get('collection')}"
            f"  rows {totals.get('rows', 0):,}  progress {100 * float(j.get('progress') or 0):.0f}%"
            f"  started {j.get('started_at')}  {elapsed_text(j)}"
        )
        print(shown(j, line))
        if j.get("error"):
            print(shown(j, f"    error: {j['error']}"))
        if j.get("phases"):
            print(f"    phases: {phase_line(j['phases'])}")
        slot = job_slot(j)
        if slot:
            print(f"    {slot_line(j, slot, states, values['source'])}")
    return EXIT_OK


def elapsed_text(job: Mapping[str, Any]) -> str:
    """A finished job's recorded seconds; a running one's time since it started (the job
    document writes `elapsed` only at the end, so it would read "elapsed None")."""
    if job.get("elapsed") is not None:
        return f"elapsed {job['elapsed']} s"
    started = job.get("started_at")
    if isinstance(started, dt.datetime):
        if started.tzinfo is None:  # pymongo returns naive UTC datetimes by default
            started = started.replace(tzinfo=dt.UTC)
        return f"running for {(dt.datetime.now(dt.UTC) - started).total_seconds():.0f} s"
    return "elapsed unknown"


def phase_line(phases: Iterable[Mapping[str, Any]]) -> str:
    """The phases a job recorded, with their seconds; one that did not end well says so."""
    parts = []
    for p in phases:
        state = p.get("state", "done")
        parts.append(
            f"{p.get('name')} {p.get('seconds', 0)} s" + ("" if state == "done" else f" ({state})")
        )
    return ", ".join(parts)


def mark_stale(jobs: list[dict[str, Any]], locks: Collection[Any]) -> None:
    """Flag RUNNING jobs whose coordinator is gone (`stale`, `stale_reason`): a job document
    only says RUNNING; the target's lease and the coordinator's pid tell whether it still is."""
    running = [j for j in jobs if j.get("status") == RUNNING]
    if not running:
        return
    names = {_namespace(j) for j in running}
    leases = {str(d["_id"]): d for d in locks.find({"_id": {"$in": sorted(names)}})}
    for j in running:
        reasons = stale_reasons(j, leases.get(_namespace(j)))
        j["stale"] = bool(reasons)
        if reasons:
            j["stale_reason"] = "; ".join(reasons)


def _namespace(job: Mapping[str, Any]) -> str:
    target = job.get("target") or {}
    return f"{target.get('db')}.{target.get('collection')}"


def job_slot(job: Mapping[str, Any]) -> str | None:
    slot = (job.get("snapshot") or {}).get("slot") or job.get("abandoned_slot")
    return str(slot) if slot else None


def slot_states(dsn: str | None, names: Iterable[str]) -> dict[str, SlotInfo]:
    if not dsn:
        return {}
    from parallelsync.cdc.slots import slot_states as states

    return states(dsn, names)


def slot_line(
    job: Mapping[str, Any], slot: str, states: dict[str, SlotInfo], dsn: str | None
) -> str:
    if not dsn:
        return f"slot {slot} (status --source DSN shows the WAL it retains)"
    state = states.get(slot)
    if state is None:
        return f"slot {slot}: no longer exists on the source"
    if state.active:
        return f"slot {slot}: active (pid {state.active_pid}), retains {state.retained} of WAL"
    if state.held_by is not None:
        return (
            f"slot {slot}: held by a running copy (pid {state.held_by}), "
            f"retains {state.retained} of WAL"
        )
    line = f"slot {slot}: inactive, retains {state.retained} of WAL"
    if job.get("status") != "FINISHED":
        # A finished job's slot is kept for change capture; any other job's only holds WAL back.
        from parallelsync.cdc.slots import drop_command

        line += f"; if no consumer needs it: {drop_command(slot, dsn)}"
    return line


def shown(job: Any, text: str) -> str:
    """Text about job documents, without the secrets any of them hold: documents written before
    passwords were redacted keep `source.dsn` verbatim, and an old error may quote it."""
    docs = job if isinstance(job, list) else [job]
    conns = []
    for d in docs:
        conns += [
            str((d.get("source") or {}).get("dsn") or ""),
            str((d.get("target") or {}).get("uri") or ""),
        ]
    return scrub_known(scrub_for(text, *filter(None, conns)))
