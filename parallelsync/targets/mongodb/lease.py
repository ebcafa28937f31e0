"""A lease per target namespace, so two runs never write the same target at once.

The lease is one document `{_id: "db.collection", job_id, owner, token, expires_at, heartbeat_at}`.
Taking it is a single conditional upsert: it succeeds when no lease exists, the existing one has
expired (its owner crashed) or it is already ours. Each take increments `token` (a fencing token):
the swap checks that the token is still ours, so a run that lost its lease never swaps.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import socket
import threading
from typing import Any

from pymongo import ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import DuplicateKeyError, PyMongoError

from parallelsync.errors import LockedError

# A crashed owner blocks the target for at most this long; heartbeats renew it every third of it.
LEASE_SECONDS = 60.0


def pid_alive(pid: int) -> bool:
    """True when the process exists and is not a zombie (a killed child not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
        return state not in ("Z", "X")
    except (FileNotFoundError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def owner_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Lease:
    def __init__(self, coll: Collection[Any], namespace: str, job_id: str) -> None:
        self._coll = coll
        self.namespace = namespace
        self.job_id = job_id
        self.token: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lost = False

    def acquire(
        self, seconds: float = LEASE_SECONDS, *, resume: bool = False, take_dead: bool = False
    ) -> int:
        """`take_dead`: also take a live-looking lease whose owner on this host is dead (a
        follow killed outright is restarted at once, not a lease's length later)."""
        now = dt.datetime.now(dt.UTC)
        if not resume:
            dead = self.dead_owner(now) if take_dead else None
            # Conditional on the dead owner's token: of two runs racing past the check, only
            # the first takes it.
            return self.take(now, seconds, mine=dead or {"job_id": self.job_id})
        # A resumed job reuses its job id: take the lease only as the dead owner left it (its
        # token), so of two resumes racing past the check only the first gets it.
        token = self.dead_owner_token(now)
        return self.take(now, seconds, mine=None if token is None else {
            "job_id": self.job_id, "token": token,
        })  # fmt: skip

    def take(self, now: dt.datetime, seconds: float, *, mine: dict[str, Any] | None) -> int:
        """One conditional upsert: no lease, an expired one, or (`mine`) the one we may re-take."""
        takeable: list[dict[str, Any]] = [{"expires_at": {"$lt": now}}]
        if mine is not None:
            takeable.append(mine)
        try:
            doc = self._coll.find_one_and_update(
                {"_id": self.namespace, "$or": takeable},
                {
                    "$set": {
                        "job_id": self.job_id,
                        "owner": owner_name(),
                        "expires_at": now + dt.timedelta(seconds=seconds),
                        "heartbeat_at": now,
                        "acquired_at": now,
                    },
                    "$inc": {"token": 1},
                },
                upsert=True,
                return_document=ReturnDocument.AFTER,
            )
        except DuplicateKeyError:
            held = self._coll.find_one({"_id": self.namespace}) or {}
            raise LockedError(
                f"target {self.namespace} is locked by job {held.get('job_id')} "
                f"(owner {held.get('owner')}, lease until {held.get('expires_at')}); "
                "wait for it to "
                "finish, or remove the lease document if that job is known to be dead"
            ) from None
        if doc is None:  # cannot happen with upsert=True and ReturnDocument.AFTER
            raise LockedError(f"could not take the lease for {self.namespace}")
        self.token = int(doc["token"])
        return self.token

    def dead_owner(self, now: dt.datetime) -> dict[str, Any] | None:
        """`{job_id, token}` of an unexpired lease whose owner process on this host is gone."""
        held = self._coll.find_one({"_id": self.namespace})
        if not held:
            return None
        host, _, pid = str(held.get("owner", "")).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or pid_alive(int(pid)):
            return None
        return {"job_id": held.get("job_id"), "token": held.get("token")}

    def dead_owner_token(self, now: dt.datetime) -> int | None:
        """A resumed job reuses its job id: make sure the job's original coordinator is really
        gone before taking its lease back. Returns the token of a live-looking lease of this job
        whose owner process is dead (None: no such lease; an expired one is taken as expired)."""
        held = self._coll.find_one({"_id": self.namespace})
        if not held or held.get("job_id") != self.job_id:
            return None
        expires = held.get("expires_at")
        if expires is not None and expires.tzinfo is None:
            expires = expires.replace(tzinfo=dt.UTC)
        if expires is None or expires < now:
            return None
        host, _, pid = str(held.get("owner", "")).rpartition(":")
        if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
            return int(held.get("token", 0))
        where = "on this host" if host == socket.gethostname() else f"on {host}"
        raise LockedError(
            f"job {self.job_id} still holds the target lease {where} (owner {held.get('owner')}, "
            f"until {expires:%Y-%m-%d %H:%M:%S} UTC): it may still be running; resume after that"
        )

    def start_heartbeat(self, seconds: float = LEASE_SECONDS) -> None:
        def beat() -> None:
            while not self._stop.wait(seconds / 3):
                if not self.renew(seconds):
                    self.lost = True
                    return

        self._thread = threading.Thread(target=beat, name="lease-heartbeat", daemon=True)
        self._thread.start()

    def renew(self, seconds: float = LEASE_SECONDS) -> bool:
        now = dt.datetime.now(dt.UTC)
        try:
            res = self._coll.update_one(
                {"_id": self.namespace, "job_id": self.job_id, "token": self.token},
                {"$set": {"expires_at": now + dt.timedelta(seconds=seconds), "heartbeat_at": now}},
            )
        except PyMongoError:
            # A passing network error is not a lost lease; the swap re-checks the token anyway.
            return True
        return res.matched_count == 1

    def still_held(self) -> bool:
        doc = self._coll.find_one({"_id": self.namespace})
        return bool(doc and doc.get("job_id") == self.job_id and doc.get("token") == self.token)

    def release(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        # A failed delete is harmless: the lease expires by itself.
        with contextlib.suppress(PyMongoError):
            self._coll.delete_one(
                {"_id": self.namespace, "job_id": self.job_id, "token": self.token}
            )


def stale_reasons(
    job: dict[str, Any], lease: dict[str, Any] | None, now: dt.datetime | None = None
) -> list[str]:
    """Why a job document that says RUNNING has no live coordinator (empty: it looks alive).

    The coordinator renews its lease every LEASE_SECONDS / 3, so an expired lease, a lease of
    another job, or no lease at all means it stopped renewing; on this host a dead pid (the
    lease's owner, or the job document's `coordinator`) says so at once, without waiting for the
    lease to run out."""
    now = now or dt.datetime.now(dt.UTC)
    reasons: list[str] = []
    mine = lease is not None and lease.get("job_id") == job.get("_id")
    if lease is None:
        reasons.append("no lease: its coordinator is gone")
    elif not mine:
        reasons.append(f"the target's lease belongs to job {lease.get('job_id')}")
    else:
        expires = lease.get("expires_at")
        if isinstance(expires, dt.datetime):
            expires = expires if expires.tzinfo else expires.replace(tzinfo=dt.UTC)
            if expires < now:
                reasons.append(f"lease expired {_ago(now - expires)} ago")
    owner = str(lease.get("owner", "")) if mine and lease else ""
    coordinator = job.get("coordinator") or {}
    host, _, pid = owner.rpartition(":")
    if not owner and coordinator:
        host, pid = str(coordinator.get("host", "")), str(coordinator.get("pid", ""))
    if host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid)):
        reasons.append(f"coordinator gone (pid {pid} is not running)")
    return reasons


def _ago(delta: dt.timedelta) -> str:
    seconds = int(delta.total_seconds())
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h"
