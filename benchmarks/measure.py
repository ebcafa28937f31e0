"""Run one command and measure it: wall time, peak RSS of its process tree, CPU split.

CPU is split three ways because on a 2-core box the question is always "who is using the
cores": the measured process tree (RUSAGE_CHILDREN of this process after the child is reaped),
the PostgreSQL backends (children CPU of the postmaster, which reaps them), and the wire sink.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import psutil

POLL_SECONDS = 0.05  # 50 ms: short enough to catch the peak of a batch-sized allocation


@dataclass
class Sample:
    rc: int
    wall: float
    peak_rss_mb: float
    per_process_peak_mb: dict[str, float]
    cpu_client_s: float
    cpu_server_s: float | None
    cpu_sink_s: float | None
    result: dict[str, Any] | None
    stderr_tail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _tree_cpu(p: psutil.Process | None, children_too: bool) -> float | None:
    if p is None:
        return None
    try:
        t = p.cpu_times()
    except psutil.Error:
        return None
    cpu = t.user + t.system
    if children_too:  # a postmaster's reaped backends
        cpu += t.children_user + t.children_system
    return cpu


def _rusage_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


class _RssMonitor(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.per_proc: dict[str, int] = {}
        self.cpu: dict[int, float] = {}  # last CPU seconds seen per pid
        self.done = threading.Event()

    def run(self) -> None:
        try:
            root = psutil.Process(self.pid)
        except psutil.Error:
            return
        while not self.done.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    key = f"{p.pid}:{p.name()}"
                    t = p.cpu_times()
                except psutil.Error:
                    continue
                self.cpu[p.pid] = t.user + t.system
                total += rss
                self.per_proc[key] = max(self.per_proc.get(key, 0), rss)
            self.peak = max(self.peak, total)
            self.done.wait(POLL_SECONDS)


def last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    return None


def run(
    cmd: list[str],
    timeout: float,
    env: dict[str, str] | None = None,
    server: psutil.Process | None = None,
    sink: psutil.Process | None = None,
    cwd: str | None = None,
) -> Sample:
    """Run cmd to completion (killing its tree after `timeout` s) and measure it."""
    load = os.getloadavg()[0]  # other work on the box at start: explains outliers later
    srv0, sink0, cli0 = _tree_cpu(server, True), _tree_cpu(sink, False), _rusage_children()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
        start_new_session=True,
    )
    mon = _RssMonitor(proc.pid)
    mon.start()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)  # its own session: only the tree we started
        out, err = proc.communicate()
        err += f"\n[benchmark] killed after {timeout:.0f} s"
    wall = time.perf_counter() - t0
    mon.done.set()
    mon.join()
    srv1, sink1 = _tree_cpu(server, True), _tree_cpu(sink, False)
    mb = 1024 * 1024
    return Sample(
        rc=proc.returncode,
        wall=wall,
        peak_rss_mb=mon.peak / mb,
        per_process_peak_mb={k: round(v / mb, 1) for k, v in mon.per_proc.items()},
        # Workers forked by a multiprocessing fork server are reaped by that server, which
        # outlives the measured process: their CPU never reaches our RUSAGE_CHILDREN. The
        # polled per-process figures see them (missing at most a poll interval per process).
        cpu_client_s=max(_rusage_children() - cli0, sum(mon.cpu.values())),
        cpu_server_s=None if srv0 is None or srv1 is None else srv1 - srv0,
        cpu_sink_s=None if sink0 is None or sink1 is None else sink1 - sink0,
        result=last_json_line(out),
        stderr_tail=err[-2000:],
        extra={"loadavg_1m": load},
    )
