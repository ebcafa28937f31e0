"""Test hooks: named points in a job where a test can run code, like a server's fail points.

`PARALLELSYNC_TEST_HOOKS="point=module:function[,point=module:function]"` makes the job call
`function(**context)` when it reaches `point`. Fault tests use it to change the world at an exact
moment (a document altered between the copy and the checks, DDL between the snapshot and the
first COPY) instead of racing a sleep. Unset, a hook costs one environment lookup.

Points and their context:
  after_snapshot  the snapshot is open, before the guard locks the table and before planning
                  (the window a TRUNCATE must not slip through): source, table, snapshot
  before_workers  the guard holds its lock, the plan is made, no worker has started yet:
                  source, table, states (the ranges, which a test may alter)
  before_checks   after the workers finished, before counts and checksums: target_uri, db, temp
  before_swap     counts and checksums passed, the temp has its indexes, just before the rename:
                  target_uri, db, temp, collection
  range_done      a range finished and the job document records it: job_id, rows, done, ranges
  follow_applied  follow: MongoDB acknowledged a transaction's writes, its checkpoint is not
                  stored yet: lsn (its commit end), transactions (applied by this run)
  follow_stored   follow: the checkpoint is stored in MongoDB, the server is not told yet:
                  lsn, transactions, idle (an idle keepalive position, not a transaction's)
  catch_up_applied  copy --follow, before the swap: a transaction is applied to the temp
                  collection (written with its chunk; nothing is stored or confirmed): lsn,
                  transactions
"""

from __future__ import annotations

import importlib
import os
from typing import Any

ENV = "PARALLELSYNC_TEST_HOOKS"


def fire(point: str, **context: Any) -> None:
    spec = os.environ.get(ENV)
    if not spec:
        return
    for item in spec.split(","):
        name, _, target = item.strip().partition("=")
        if name != point:
            continue
        module, _, function = target.partition(":")
        getattr(importlib.import_module(module), function)(**context)
