"""Nothing a job starts outlives its coordinator; a worker stops cleanly when asked; signs of life.

The process tree: the coordinator starts a fork server (`pool.py`, where the platform has one)
and the workers are forked from it, so they are the coordinator's grandchildren; where workers are
spawned they are its children. When the coordinator dies without stopping them (SIGKILL, OOM
killer), three things make sure none of them lives on, each covering what the others cannot:

1. The parent-death signal (Linux `prctl(PR_SET_PDEATHSIG, SIGKILL)`): the fork server asks for
   SIGKILL when the coordinator dies (`in_fork_server`, run by `preload.py`), each worker when its
   parent dies (the fork server, or the coordinator). Immediate, and it works on a worker that is
   stopped or stuck in a C call. The kernel sends it when the parent *thread* ends: the pool starts
   the fork server and spawns workers from the coordinator's main thread, which lives as long as
   the coordinator.
2. A parent check right after prctl: a parent that died before prctl ran is otherwise missed.
3. The lifeline, for platforms without prctl (and the same race): a pipe whose only write end the
   coordinator holds. A worker thread waits on the read end; EOF means the coordinator is gone.

The fork server needs no parent check: it runs prctl while it loads, before it can fork a worker,
and if the coordinator died before that, the pipe multiprocessing keeps from the coordinator to it
is at EOF (only workers would hold its write end too) and it exits by itself. multiprocessing's
resource tracker exits when every process holding its pipe (coordinator, fork server, workers) is
gone.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
from types import FrameType
from typing import Any

from parallelsync.workers.messages import Heartbeat

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
# Exit codes of a worker that ends by itself (the pool reads them; see pool.py).
EXIT_ORPHANED = 70  # the coordinator is gone
EXIT_WRITE_IN_FLIGHT = 71  # stopped while an insert had not returned: it may still land

# The fork server's pid, set in the fork server itself and inherited by every worker forked from
# it; None in a spawned worker, whose parent is the coordinator.
FORK_SERVER_PID: int | None = None


def set_parent_death_signal() -> bool:
    """Ask the kernel to SIGKILL this process when its parent dies. False where unsupported."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def in_fork_server() -> None:
    """Run in the fork server (preload.py): die with the coordinator, tell workers who we are."""
    global FORK_SERVER_PID
    FORK_SERVER_PID = os.getpid()
    set_parent_death_signal()


def expected_parent() -> int | None:
    """The process that started this worker: the fork server, or the coordinator that spawned it."""
    if FORK_SERVER_PID is not None:
        return FORK_SERVER_PID
    parent = multiprocessing.parent_process()
    return parent.pid if parent is not None else None


def bind_to_coordinator(lifeline: Any) -> None:
    """At a worker's start: exit now if the coordinator is already gone, and whenever it goes."""
    set_parent_death_signal()
    parent = expected_parent()
    if parent is not None and os.getppid() != parent:
        os._exit(EXIT_ORPHANED)  # the parent died before prctl ran
    if lifeline is None:
        return
    if lifeline.poll(0):  # EOF already: the coordinator died before we got here
        os._exit(EXIT_ORPHANED)
    threading.Thread(target=_watch, args=(lifeline,), name="lifeline", daemon=True).start()


def _watch(lifeline: Any) -> None:
    # The coordinator never writes to the lifeline: readable means EOF, its write end is closed.
    multiprocessing.connection.wait([lifeline])
    os._exit(EXIT_ORPHANED)


class Stopping(BaseException):
    """SIGTERM from the coordinator. A BaseException, so no `except Exception` swallows it."""


def stop_on_sigterm() -> None:
    """SIGTERM raises `Stopping` in the main thread: the worker stops reading, waits for the insert
    in flight and exits (worker.py). Only once: the clean-up must not be interrupted again (the
    coordinator SIGKILLs a worker that takes too long)."""

    def handle(signum: int, frame: FrameType | None) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Stopping

    signal.signal(signal.SIGTERM, handle)


class Heart:
    """Sends a `Heartbeat` every `interval` s while the worker holds a range, from its own thread,
    so a worker waiting on a slow server is not taken for a stuck one (job/schedule.py)."""

    def __init__(self, wid: int, results: Any, interval: float) -> None:
        self.wid = wid
        self.results = results
        self.interval = interval
        self.range_id: int | None = None  # the range held now
        self._thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        stop = threading.Event()  # never set: the thread ends with the process
        while not stop.wait(self.interval):
            rid = self.range_id
            if rid is not None:
                self.results.put(Heartbeat(self.wid, rid))
