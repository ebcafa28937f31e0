"""`parallelsync status`: the job documents of a target database, newest first."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

from parallelsync.config import load_file, merge, options_for
from parallelsync.errors import EXIT_OK, UsageError
from parallelsync.redact import scrub_for, scrub_known
from parallelsync.targets.mongodb.client import connect

STATUS_OPTIONS = options_for("status")
_NAMES = {o.name for o in STATUS_OPTIONS}
# The fields a status line shows; the whole document is printed with --job or --json.
SUMMARY_FIELDS = {
    "_id": 1, "status": 1, "target": 1, "source.table": 1, "source.schema": 1, "totals": 1,
    "progress": 1, "started_at": 1, "finished_at": 1, "elapsed": 1, "error": 1, "workers": 1,
    "snapshot.consistent_lsn": 1, "source.dsn": 1,
}  # fmt: skip


def run_status(cli: Mapping[str, Any], *, as_json: bool) -> int:
    file = {k: v for k, v in load_file(cli.get("config")).items() if k in _NAMES}
    values = merge(STATUS_OPTIONS, cli, os.environ, file)
    if not values["target"] or not values["db"]:
        raise UsageError("status needs --target (a MongoDB URI) and --db")
    client = connect(values["target"])
    try:
        coll = client[values["db"]][values["stats_collection"]]
        if cli.get("job"):
            job = coll.find_one({"_id": cli["job"]})
            if job is None:
                raise UsageError(f"no job {cli['job']} in {values['db']}.{coll.name}")
            print(shown(job, json.dumps(job, default=str, indent=None if as_json else 2)))
            return EXIT_OK
        query: dict[str, Any] = {}
        if values["collection"]:
            query["target.collection"] = values["collection"]
        limit = int(cli.get("limit") or 10)
        jobs = list(coll.find(query, SUMMARY_FIELDS).sort("started_at", -1).limit(limit))
    finally:
        client.close()
    if as_json:
        print(shown(jobs, json.dumps(jobs, default=str)))
        return EXIT_OK
    if not jobs:
        print(f"no jobs in {values['db']}.{values['stats_collection']}")
    for j in jobs:
        totals = j.get("totals") or {}
        target = j.get("target") or {}
        line = (
            f"{j['_id']}  {j.get('status', '?'):<8}  {target.get('db')}.{target.get('collection')}"
            f"  rows {totals.get('rows', 0):,}  progress {100 * float(j.get('progress') or 0):.0f}%"
            f"  started {j.get('started_at')}  elapsed {j.get('elapsed', '-')} s"
        )
        print(shown(j, line))
        if j.get("error"):
            print(shown(j, f"    error: {j['error']}"))
    return EXIT_OK


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
