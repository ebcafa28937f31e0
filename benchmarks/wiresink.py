"""A benchmark-only MongoDB wire-protocol server that counts inserted documents and discards them.

It speaks just enough of the protocol for pymongo (OP_MSG, plus OP_QUERY for a legacy
handshake) and answers as a standalone server. Only the command document (section kind 0) of
each message is decoded; document sequences (kind 1) are walked by their length prefixes to
count them and never decoded, so the sink costs far less per document than the client that
produced them. Per-namespace counters make `count`/`aggregate` ($count or $group/$sum) agree
with what was inserted; `renameCollection` moves a counter and `drop` resets it. Filters are
NOT applied: any count on a namespace returns everything inserted into it.

    python benchmarks/wiresink.py --port 27999 [--max-seconds 3600] [--parent-pid PID]
    from wiresink import start_sink; uri, stop = start_sink(0)
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import os
import socket
import socketserver
import struct
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import bson
from bson.int64 import Int64

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # run as a script or imported
from sinkstore import DocStore, apply_update, upsert_seed

from parallelsync.targets.mongodb.lease import pid_alive

OP_REPLY = 1
OP_QUERY = 2004
OP_MSG = 2013
OP_COMPRESSED = 2012

_HEADER = struct.Struct("<iiii")
_I32 = struct.Struct("<i")
_unpack_i32 = _I32.unpack_from
_MSG_CHECKSUM = 1
_MSG_MORE_TO_COME = 2

MAX_BSON = 16 * 1024 * 1024
MAX_MESSAGE = 48_000_000
MAX_BATCH = 100_000
# Insert messages with at most this many documents are decoded and kept in the side store: they
# are control documents (job statistics, leases), not the bulk data.
SMALL_INSERT = 4


class SinkState:
    """Namespaces, document counters and index specs shared by all connections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: dict[str, int] = {}
        self.indexes: dict[str, list[dict[str, Any]]] = {}
        self.total_docs = 0
        self.total_bytes = 0
        self.messages = 0
        self.connections = 0
        self.started = time.time()
        self.store = DocStore()
        # namespace -> {"replace"|"update"|"delete": operations received}: what a change
        # stream's applier (parallelsync follow) sent, whatever the store kept of it
        self.write_ops: dict[str, dict[str, int]] = {}
        # namespace -> raw _id elements seen; only with unique_ids (costs ~70 bytes per document)
        self.unique_ids = False
        self.ids: dict[str, set[bytes]] = {}
        self._sorted: dict[str, tuple[int, Any]] = {}  # ns -> (len(ids) when built, sorted ids)

    def count_op(self, ns: str, kind: str) -> None:
        """One update/replace/delete operation (caller holds lock)."""
        ops = self.write_ops.setdefault(ns, {"replace": 0, "update": 0, "delete": 0})
        ops[kind] += 1

    def ensure(self, ns: str) -> None:
        if ns not in self.counts:
            self.counts[ns] = 0
            self.indexes[ns] = [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]

    def add(self, ns: str, n: int) -> None:
        with self.lock:
            self.ensure(ns)
            self.counts[ns] += n
            self.total_docs += n

    def drop(self, ns: str) -> bool:
        with self.lock:
            self.indexes.pop(ns, None)
            self.ids.pop(ns, None)
            self.store.drop(ns)
            return self.counts.pop(ns, None) is not None

    def id_range_count(self, ns: str, ops: dict[str, Any]) -> int:
        """Integer _ids of bulk documents within $gt/$gte/$lt/$lte bounds (caller holds lock)."""
        import numpy as np

        ids = self.ids.get(ns, set())
        cached = self._sorted.get(ns)
        if cached is None or cached[0] != len(ids):
            # int64 (0x12) and int32 (0x10) _id elements; one join + frombuffer, then a sort, so
            # a verification query costs ~0.1 s per million ids once and microseconds after.
            i64 = b"".join(k[5:] for k in ids if k[0] == 0x12 and len(k) == 13)
            i32 = b"".join(k[5:] for k in ids if k[0] == 0x10 and len(k) == 9)
            arr = np.sort(
                np.concatenate([np.frombuffer(i64, "<i8"), np.frombuffer(i32, "<i4").astype("<i8")])
            )
            cached = (len(ids), arr)
            self._sorted[ns] = cached
        arr = cached[1]
        lo, hi = 0, len(arr)
        for op, v in ops.items():
            if not isinstance(v, int) or isinstance(v, bool):
                raise ValueError(f"wiresink counts only integer _id ranges, got {op}: {v!r}")
            if op == "$gte":
                lo = max(lo, int(np.searchsorted(arr, v, "left")))
            elif op == "$gt":
                lo = max(lo, int(np.searchsorted(arr, v, "right")))
            elif op == "$lt":
                hi = min(hi, int(np.searchsorted(arr, v, "left")))
            elif op == "$lte":
                hi = min(hi, int(np.searchsorted(arr, v, "right")))
            else:
                raise ValueError(f"wiresink cannot count _id with {op}")
        return max(0, hi - lo)

    def delete_id_range(self, ns: str, ops: dict[str, Any]) -> int:
        """Forget integer _ids within the bounds (rare: a retried range); caller holds lock."""
        tests = {
            "$gte": lambda a, b: a >= b,
            "$gt": lambda a, b: a > b,
            "$lt": lambda a, b: a < b,
            "$lte": lambda a, b: a <= b,
        }
        ids = self.ids[ns]
        gone = [
            k
            for k in ids
            if k[0] in (0x10, 0x12)
            and all(
                tests[op](int.from_bytes(k[5:], "little", signed=True), v) for op, v in ops.items()
            )
        ]
        ids.difference_update(gone)
        self._sorted.pop(ns, None)
        return len(gone)

    def upsert(self, ns: str, query: dict[str, Any], update: Any) -> dict[str, Any] | None:
        """Insert the upsert image; None if its _id exists (a server's duplicate key error)."""
        doc = apply_update(upsert_seed(query), update, inserting=True)
        if self.store.find(ns, {"_id": doc["_id"]}, 1):
            return None
        self.ensure(ns)
        self.store.put(ns, doc)
        self.counts[ns] += 1
        self.total_docs += 1
        return doc


def count_sequence(buf: bytearray | memoryview, pos: int, end: int) -> int:
    """Number of BSON documents packed back to back in buf[pos:end], read from length prefixes."""
    n = 0
    while pos < end:
        pos += _unpack_i32(buf, pos)[0]
        n += 1
    return n


# Value sizes of fixed-width BSON types, for cutting the _id element out of a raw document.
_FIXED = {0x01: 8, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8, 0x13: 16}


def id_keys(buf: memoryview, pos: int, end: int) -> list[bytes]:
    """The raw `_id` element (type byte included) of each document in buf[pos:end].

    A sync tool writes `_id` first, as servers store it; a document whose first element is not
    `_id` is keyed by its whole bytes, which still detects an exact re-insert.
    """
    keys = []
    while pos < end:
        size = _unpack_i32(buf, pos)[0]
        v = pos + 9
        if buf[pos + 5 : v] == b"_id\x00":
            t = buf[pos + 4]
            vl = _FIXED.get(t)
            if vl is None:
                n = _unpack_i32(buf, v)[0]
                vl = {0x02: 4 + n, 0x03: n, 0x04: n, 0x05: 5 + n}.get(t, size - 9)
            keys.append(bytes(buf[pos + 4 : v + vl]))
        else:
            keys.append(bytes(buf[pos : pos + size]))
        pos += size
    return keys


def _err(code: int, name: str, msg: str) -> dict[str, Any]:
    return {"ok": 0.0, "errmsg": msg, "code": code, "codeName": name}


def _cursor(ns: str, batch: list[dict[str, Any]]) -> dict[str, Any]:
    return {"cursor": {"id": Int64(0), "ns": ns, "firstBatch": batch}, "ok": 1.0}


def _dup_key(ns: str, doc_id: Any) -> dict[str, Any]:
    return {
        "index": 0,
        "code": 11000,
        "codeName": "DuplicateKey",
        "errmsg": f"E11000 duplicate key error collection: {ns} dup key: {{ _id: {doc_id!r} }}",
    }


class Commands:
    """Command name -> reply. Each handler gets (state, db, cmd, docs-in-sequences)."""

    def __init__(self, state: SinkState) -> None:
        self.state = state
        self.conn_ids = iter(range(1, 1 << 62))

    def hello(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        return {
            "helloOk": True,
            "ismaster": True,
            "isWritablePrimary": True,
            "maxBsonObjectSize": MAX_BSON,
            "maxMessageSizeBytes": MAX_MESSAGE,
            "maxWriteBatchSize": MAX_BATCH,
            "localTime": dt.datetime.now(dt.UTC),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": next(self.conn_ids),
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": False,
            "ok": 1.0,
        }

    def build_info(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        return {
            "version": "7.0.0",
            "versionArray": [7, 0, 0, 0],
            "gitVersion": "wiresink",
            "maxBsonObjectSize": MAX_BSON,
            "bits": 64,
            "ok": 1.0,
        }

    def ok(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        return {"ok": 1.0}

    def insert(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        # Bulk documents arrive as a counted kind-1 sequence; small inserts arrive decoded.
        ns = f"{db}.{cmd['insert']}"
        if "$sinkIds" in cmd:
            return self._insert_unique(ns, cmd["$sinkIds"])
        small = cmd.get("documents", [])
        self.state.add(ns, nseq + len(small))
        with self.state.lock:
            for d in small:
                self.state.store.put(ns, d)
        return {"n": nseq + len(small), "ok": 1.0}

    def _insert_unique(self, ns: str, ids: list[bytes]) -> dict[str, Any]:
        """Like a server with its _id index: duplicates are write errors (a retried range)."""
        st = self.state
        with st.lock:
            seen = st.ids.setdefault(ns, set())
            dups: list[int] = []
            if seen.isdisjoint(ids) and len(set(ids)) == len(ids):  # the usual case, at C speed
                seen.update(ids)
            else:
                for i, k in enumerate(ids):
                    if k in seen:
                        dups.append(i)
                    else:
                        seen.add(k)
        new = len(ids) - len(dups)
        self.state.add(ns, new)
        reply: dict[str, Any] = {"n": new, "ok": 1.0}
        if dups:
            reply["writeErrors"] = [dict(_dup_key(ns, "..."), index=i) for i in dups]
        return reply

    def update(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd['update']}"
        st = self.state
        n = modified = 0
        upserted: list[dict[str, Any]] = []
        errors: list[dict[str, Any]] = []
        with st.lock:
            st.ensure(ns)
            for i, u in enumerate(cmd.get("updates", [])):
                q, upd = u.get("q", {}), u.get("u", {})
                replace = isinstance(upd, dict) and not any(k.startswith("$") for k in upd)
                st.count_op(ns, "replace" if replace else "update")
                found = st.store.find(ns, q, 0 if u.get("multi") else 1)
                for d in found:
                    st.store.put(ns, apply_update(d, upd, inserting=False))
                n += len(found)
                modified += len(found)
                if not found and u.get("upsert"):
                    doc = st.upsert(ns, q, upd)
                    if doc is None:
                        errors.append(dict(_dup_key(ns, q.get("_id")), index=i))
                    else:
                        upserted.append({"index": i, "_id": doc["_id"]})
                        n += 1
        reply: dict[str, Any] = {"n": n, "nModified": modified, "ok": 1.0}
        if upserted:
            reply["upserted"] = upserted
        if errors:
            reply["writeErrors"] = errors
        return reply

    def delete(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd['delete']}"
        st = self.state
        n = 0
        with st.lock:
            for d in cmd.get("deletes", []):
                q = d.get("q") or {}
                st.count_op(ns, "delete")
                if not q and d.get("limit", 0) == 0:  # delete_many({}) empties the collection
                    n += st.counts.get(ns, 0)
                    if ns in st.counts:
                        st.counts[ns] = 0
                    st.store.drop(ns)
                    st.ids.pop(ns, None)
                else:
                    k = st.store.delete(ns, q, d.get("limit", 0))
                    if ns in st.ids and set(q) == {"_id"} and isinstance(q["_id"], dict):
                        k += st.delete_id_range(ns, q["_id"])  # a retried range is cleared
                    if ns in st.counts:
                        st.counts[ns] -= k
                    n += k
        return {"n": n, "ok": 1.0}

    def find_and_modify(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd.get('findAndModify', cmd.get('findandmodify'))}"
        st = self.state
        q = cmd.get("query") or {}
        with st.lock:
            found = st.store.find(ns, q, 1)
            if found and cmd.get("remove"):
                st.store.delete(ns, {"_id": found[0]["_id"]}, 1)
                st.counts[ns] -= 1
                return {"lastErrorObject": {"n": 1}, "value": found[0], "ok": 1.0}
            if found:
                before = copy.deepcopy(found[0])
                after = apply_update(found[0], cmd.get("update", {}), inserting=False)
                st.store.put(ns, after)
                return {
                    "lastErrorObject": {"n": 1, "updatedExisting": True},
                    "value": after if cmd.get("new") else before,
                    "ok": 1.0,
                }
            if cmd.get("upsert") and not cmd.get("remove"):
                doc = st.upsert(ns, q, cmd.get("update", {}))
                if doc is None:
                    e = _dup_key(ns, q.get("_id"))
                    return _err(e["code"], e["codeName"], e["errmsg"])
                return {
                    "lastErrorObject": {"n": 1, "updatedExisting": False, "upserted": doc["_id"]},
                    "value": doc if cmd.get("new") else None,
                    "ok": 1.0,
                }
        return {"lastErrorObject": {"n": 0, "updatedExisting": False}, "value": None, "ok": 1.0}

    def _count(self, ns: str, flt: dict[str, Any] | None) -> int:
        # The bulk data is not stored: an empty filter counts it, an integer _id range counts
        # it when --unique-ids kept the _ids (per-range verification), anything else sees only
        # the side store.
        if not flt:
            return self.state.counts.get(ns, 0)
        with self.state.lock:
            n = len(self.state.store.find(ns, flt))
            if ns in self.state.ids and set(flt) == {"_id"} and isinstance(flt["_id"], dict):
                n += self.state.id_range_count(ns, flt["_id"])
            return n

    def count(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        return {"n": self._count(f"{db}.{cmd['count']}", cmd.get("query")), "ok": 1.0}

    def aggregate(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        coll = cmd["aggregate"]
        ns = f"{db}.{coll}"
        n = self.state.counts.get(ns, 0)
        batch: list[dict[str, Any]] = []
        for stage in cmd.get("pipeline", []):
            if "$match" in stage:
                n = self._count(ns, stage["$match"])
            elif "$count" in stage:
                batch = [{stage["$count"]: n}] if n else []
            elif "$group" in stage:
                # count_documents: {$group: {_id: 1, n: {$sum: 1}}}
                out: dict[str, Any] = {"_id": stage["$group"].get("_id")}
                for k, v in stage["$group"].items():
                    if k != "_id" and isinstance(v, dict) and "$sum" in v:
                        out[k] = n * v["$sum"] if isinstance(v["$sum"], int) else n
                batch = [out] if n else []
        return _cursor(ns, batch)

    def find(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd['find']}"
        with self.state.lock:
            docs = copy.deepcopy(
                self.state.store.find(ns, cmd.get("filter") or {}, abs(cmd.get("limit", 0)))
            )
        return _cursor(ns, docs)

    def get_more(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        return {
            "cursor": {"id": Int64(0), "ns": f"{db}.{cmd.get('collection')}", "nextBatch": []},
            "ok": 1.0,
        }

    def list_collections(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        prefix = db + "."
        flt = cmd.get("filter") or {}
        names = [ns[len(prefix) :] for ns in list(self.state.counts) if ns.startswith(prefix)]
        if isinstance(flt.get("name"), str):
            names = [n for n in names if n == flt["name"]]
        batch = [
            {"name": n, "type": "collection", "options": {}, "info": {"readOnly": False}}
            for n in names
        ]
        if cmd.get("nameOnly"):
            batch = [{"name": b["name"], "type": "collection"} for b in batch]
        return _cursor(f"{db}.$cmd.listCollections", batch)

    def list_indexes(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd['listIndexes']}"
        if ns not in self.state.counts:
            return _err(26, "NamespaceNotFound", f"ns does not exist: {ns}")
        return _cursor(ns, list(self.state.indexes.get(ns, [])))

    def create_indexes(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd['createIndexes']}"
        with self.state.lock:
            created = ns not in self.state.counts
            self.state.ensure(ns)
            idx = self.state.indexes[ns]
            before = len(idx)
            names = {i["name"] for i in idx}
            idx.extend(dict(i, v=2) for i in cmd.get("indexes", []) if i.get("name") not in names)
            return {
                "createdCollectionAutomatically": created,
                "numIndexesBefore": before,
                "numIndexesAfter": len(idx),
                "ok": 1.0,
            }

    def create(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        with self.state.lock:
            self.state.ensure(f"{db}.{cmd['create']}")
        return {"ok": 1.0}

    def drop(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        ns = f"{db}.{cmd['drop']}"
        self.state.drop(ns)
        return {"ns": ns, "nIndexesWas": 1, "ok": 1.0}

    def drop_database(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        for ns in [n for n in list(self.state.counts) if n.startswith(db + ".")]:
            self.state.drop(ns)
        return {"dropped": db, "ok": 1.0}

    def rename_collection(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        src, dst = cmd["renameCollection"], cmd["to"]
        st = self.state
        with st.lock:
            if src not in st.counts:
                return _err(26, "NamespaceNotFound", f"source namespace does not exist: {src}")
            if dst in st.counts and not cmd.get("dropTarget"):
                return _err(48, "NamespaceExists", f"target namespace exists: {dst}")
            st.counts[dst] = st.counts.pop(src)
            st.indexes[dst] = st.indexes.pop(src)
            st.store.rename(src, dst)
            if src in st.ids:
                st.ids[dst] = st.ids.pop(src)
            else:
                st.ids.pop(dst, None)
            st._sorted.pop(src, None)
            st._sorted.pop(dst, None)
        return {"ok": 1.0}

    def sink_stats(self, db: str, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        st = self.state
        return {
            "counts": dict(st.counts),
            "writeOps": {ns: dict(ops) for ns, ops in st.write_ops.items()},
            "totalDocs": st.total_docs,
            "totalBytes": st.total_bytes,
            "messages": st.messages,
            "connections": st.connections,
            "ok": 1.0,
        }

    def table(self) -> dict[str, Callable[[str, dict[str, Any], int], dict[str, Any]]]:
        t: dict[str, Callable[[str, dict[str, Any], int], dict[str, Any]]] = {
            "hello": self.hello,
            "isMaster": self.hello,
            "ismaster": self.hello,
            "buildInfo": self.build_info,
            "buildinfo": self.build_info,
            "insert": self.insert,
            "update": self.update,
            "delete": self.delete,
            "findAndModify": self.find_and_modify,
            "findandmodify": self.find_and_modify,
            "count": self.count,
            "aggregate": self.aggregate,
            "find": self.find,
            "getMore": self.get_more,
            "listCollections": self.list_collections,
            "listIndexes": self.list_indexes,
            "createIndexes": self.create_indexes,
            "create": self.create,
            "drop": self.drop,
            "dropDatabase": self.drop_database,
            "renameCollection": self.rename_collection,
            "sinkStats": self.sink_stats,
        }
        for name in (
            "ping",
            "endSessions",
            "killCursors",
            "dropIndexes",
            "getLastError",
            "serverStatus",
            "getParameter",
            "getCmdLineOpts",
            "saslStart",
            "abortTransaction",
            "commitTransaction",
            "configureFailPoint",
            "collMod",
        ):
            t[name] = self.ok
        return t


class _Handler(socketserver.BaseRequestHandler):
    server: _SinkServer

    def handle(self) -> None:
        sock: socket.socket = self.request
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        st = self.server.state
        with st.lock:
            st.connections += 1
        # One reusable buffer per connection, grown to the largest message seen: no per-message
        # allocation, and recv_into copies each byte exactly once.
        buf = bytearray(1 << 20)
        view = memoryview(buf)
        header = bytearray(16)
        try:
            while True:
                if not _recv_exact(sock, memoryview(header), 16):
                    return
                length, request_id, _, opcode = _HEADER.unpack(header)
                body_len = length - 16
                if body_len > len(buf):
                    buf = bytearray(body_len)
                    view = memoryview(buf)
                if not _recv_exact(sock, view, body_len):
                    return
                st.total_bytes += length
                st.messages += 1
                reply = self.server.dispatch(opcode, request_id, view, body_len)
                if reply:
                    sock.sendall(reply)
        except (ConnectionError, OSError):
            return


def _recv_exact(sock: socket.socket, view: memoryview, n: int) -> bool:
    got = 0
    while got < n:
        k = sock.recv_into(view[got:n], n - got)
        if k == 0:
            return False
        got += k
    return True


def _cstring_end(buf: memoryview, pos: int) -> int:
    end = pos
    while buf[end] != 0:
        end += 1
    return end


class _SinkServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port: int, unique_ids: bool = False) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.state = SinkState()
        self.state.unique_ids = unique_ids
        self.commands = Commands(self.state).table()
        self.last_activity = time.monotonic()

    def run_command(self, cmd: dict[str, Any], nseq: int) -> dict[str, Any]:
        name = next(iter(cmd)) if cmd else ""
        fn = self.commands.get(name)
        if fn is None:
            return _err(59, "CommandNotFound", f"no such command: '{name}'")
        try:
            return fn(str(cmd.get("$db", "admin")), cmd, nseq)
        except (KeyError, TypeError, ValueError) as e:
            return _err(2, "BadValue", f"wiresink cannot handle {name}: {e!r}")

    def dispatch(self, opcode: int, request_id: int, view: memoryview, n: int) -> bytes | None:
        self.last_activity = time.monotonic()
        if opcode == OP_MSG:
            return self._op_msg(request_id, view, n)
        if opcode == OP_QUERY:
            return self._op_query(request_id, view)
        raise ConnectionError(f"unsupported opcode {opcode}")

    def _op_msg(self, request_id: int, view: memoryview, n: int) -> bytes | None:
        flags = _unpack_i32(view, 0)[0]
        end = n - 4 if flags & _MSG_CHECKSUM else n
        pos = 4
        cmd: dict[str, Any] = {}
        seq: dict[str, list[dict[str, Any]]] = {}
        nseq = 0
        cmd_ids: list[bytes] = []
        while pos < end:
            kind = view[pos]
            pos += 1
            size = _unpack_i32(view, pos)[0]
            if kind == 0:
                cmd = bson.decode(view[pos : pos + size])
            else:
                # kind 1: int32 size, cstring identifier, then documents until size is used up.
                ident_end = _cstring_end(view, pos + 4)
                ident = view[pos + 4 : ident_end]
                k = count_sequence(view, ident_end + 1, pos + size) if ident == b"documents" else 0
                if k > SMALL_INSERT or (k == 0 and ident == b"documents"):
                    nseq += k
                    if self.state.unique_ids:
                        cmd_ids.extend(id_keys(view, ident_end + 1, pos + size))
                else:  # updates/deletes: few and small, and their content decides the reply
                    seq[bytes(view[pos + 4 : ident_end]).decode()] = bson.decode_all(
                        view[ident_end + 1 : pos + size]
                    )
            pos += size
        cmd.update(seq)
        if self.state.unique_ids and nseq:
            cmd["$sinkIds"] = cmd_ids
        reply = self.run_command(cmd, nseq)
        if flags & _MSG_MORE_TO_COME:  # unacknowledged write (w:0): the client expects silence
            return None
        body = b"\x00\x00\x00\x00\x00" + bson.encode(reply)
        return _HEADER.pack(16 + len(body), 0, request_id, OP_MSG) + body

    def _op_query(self, request_id: int, view: memoryview) -> bytes:
        name_end = _cstring_end(view, 4)
        full = bytes(view[4:name_end]).decode()
        pos = name_end + 1 + 8  # numberToSkip, numberToReturn
        size = _unpack_i32(view, pos)[0]
        query = bson.decode(view[pos : pos + size])
        if "$query" in query:
            query = query["$query"]
        query["$db"] = full.split(".", 1)[0]
        doc = bson.encode(self.run_command(query, 0))
        body = struct.pack("<iqii", 0, 0, 0, 1) + doc
        return _HEADER.pack(16 + len(body), 0, request_id, OP_REPLY) + body


def start_sink(port: int = 0, unique_ids: bool = False) -> tuple[str, Callable[[], None]]:
    """Serve in a background thread of this process; return (mongodb URI, stop function)."""
    srv = _SinkServer(port, unique_ids)
    t = threading.Thread(
        target=srv.serve_forever, kwargs={"poll_interval": 0.2}, name="wiresink", daemon=True
    )
    t.start()
    uri = f"mongodb://127.0.0.1:{srv.server_address[1]}/?directConnection=true"

    def stop() -> None:
        srv.shutdown()
        srv.server_close()

    return uri, stop


def main() -> None:
    ap = argparse.ArgumentParser(description="discarding MongoDB wire-protocol sink (benchmarks)")
    ap.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    ap.add_argument(
        "--max-seconds",
        type=float,
        default=3 * 3600,
        help="exit after this long no matter what (a forgotten sink stops by itself)",
    )
    ap.add_argument(
        "--idle-seconds", type=float, default=900, help="exit after this long without a message"
    )
    ap.add_argument("--parent-pid", type=int, help="exit when this process is gone")
    ap.add_argument(
        "--unique-ids",
        action="store_true",
        help="remember every _id and reject duplicates as a server would (retried "
        "ranges stay countable; ~70 bytes of memory per document)",
    )
    args = ap.parse_args()
    srv = _SinkServer(args.port, args.unique_ids)
    threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
    print(f"mongodb://127.0.0.1:{srv.server_address[1]}/", flush=True)
    deadline = time.monotonic() + args.max_seconds
    while time.monotonic() < deadline and time.monotonic() - srv.last_activity < args.idle_seconds:
        if args.parent_pid and not pid_alive(args.parent_pid):
            break
        time.sleep(0.5)
    srv.shutdown()


if __name__ == "__main__":
    main()
