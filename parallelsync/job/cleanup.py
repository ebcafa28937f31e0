"""Dropping a failed or aborted run's temp collection so that it stays dropped.

The workers are stopped first, each after the insert it had in flight (workers/pool.py `stop`),
so normally one drop is the end of it. But a worker that had to be SIGKILLed, or that died
uncleanly shortly before, may have sent an insert the server runs only after the drop, and an
insert re-creates a missing collection. So the temp is listed again, and while such a late insert
may still arrive it is watched, and dropped again if it comes back.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from parallelsync.targets import Target
from parallelsync.targets.base import Log

# After a worker died uncleanly, how long its last insert may still arrive: the server runs a
# request as soon as it has read it (milliseconds), unless it is swamped; 5 s covers a busy
# server and keeps an abort quick.
LATE_WRITE_S = 5.0
# Pace of the re-checks while watching.
WATCH_POLL_S = 0.2


def drop_temp(
    target: Target,
    temp: str,
    *,
    unclean_since: float | None,
    log: Log,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Drop `temp` and make sure it is gone; True when it is. `unclean_since`: when a worker last
    died in a way that may have left an insert in flight (None: never)."""
    until = clock() if unclean_since is None else unclean_since + LATE_WRITE_S
    target.discard(temp)
    try:
        while True:
            if target.exists(temp):
                target.discard(temp)
                log(f"a late insert of a stopped worker re-created {temp}; dropped it again")
            if clock() >= until:
                break
            sleep(WATCH_POLL_S)
        gone = not target.exists(temp)
    except Exception as exc:  # the server went away: the clean-up goes on, the next run drops it
        log(f"could not check that the temp collection {temp} is gone ({exc}); the next run will")
        return False
    if not gone:
        log(f"the temp collection {temp} is still there; the next run against this target drops it")
    return gone
