"""Functions the job calls at its test hooks (parallelsync/job/hooks.py) in fault tests."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from pymongo import MongoClient


def alter_one_document(target_uri: str, db: str, temp: str, **_: Any) -> None:
    """Change one document in the temp collection between the copy and the checks."""
    client: MongoClient[dict[str, Any]] = MongoClient(target_uri)
    try:
        coll = client[db][temp]
        doc = coll.find_one(sort=[("_id", 1)])
        assert doc is not None, "the temp collection is empty"
        coll.update_one({"_id": doc["_id"]}, {"$set": {"altered": True}})
    finally:
        client.close()


# Where `hold_the_job` announces that it holds the job, and after how many rows it does.
HOLD_MARKER = "PSYNC_TEST_HOLD_MARKER"
HOLD_ROWS = "PSYNC_TEST_HOLD_ROWS"


def hold_the_job(rows: int, done: int, **_: Any) -> None:
    """Once a range is finished and recorded with HOLD_ROWS rows copied, stop the coordinator
    right there (it waits here until it is killed) and say so by creating HOLD_MARKER: a fault
    test kills it at that known state instead of racing a copy that may already have finished."""
    if rows < int(os.environ.get(HOLD_ROWS, "1")):
        return
    Path(os.environ[HOLD_MARKER]).write_text(str(os.getpid()))
    while True:
        time.sleep(1)
