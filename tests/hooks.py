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


# A directory the test and the held job share: the job writes `reached` when it gets to the hook
# and waits there until the test creates `release`.
HOLD_DIR_ENV = "PARALLELSYNC_TEST_HOLD_DIR"
# Generous: a test that never releases the job must fail, not hang the suite.
HOLD_DEADLINE_S = 600.0


def hold_until_released(**_: Any) -> None:
    """Keep the job at this point (lease held, slot and temp in place) until the test says go."""
    directory = Path(os.environ[HOLD_DIR_ENV])
    (directory / "reached").write_text(str(os.getpid()))
    deadline = time.monotonic() + HOLD_DEADLINE_S
    while not (directory / "release").exists():
        if time.monotonic() > deadline:
            raise RuntimeError(f"the test never released the job held at {directory}")
        time.sleep(0.05)
