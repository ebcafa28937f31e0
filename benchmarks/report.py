"""Medians, ratios, the printed table and machine facts for benchmark results."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from measure import Sample

MB = 1_000_000  # MB/s in decimal megabytes, as network and disk rates usually are


@dataclass
class Entry:
    """One row of the table: a command measured `repeat` times."""

    name: str
    workers: int
    kind: str  # read | baseline | parallelsync
    cmd: list[str]
    rows: int  # rows the command is expected to move
    samples: list[dict[str, Any]] = field(default_factory=list)
    unavailable: str | None = None

    def add(self, s: Sample) -> None:
        r = s.result or {}
        d = asdict(s)
        ok = s.rc == 0 and not r.get("error") and "unavailable" not in r and "rows" in r
        if self.kind == "parallelsync":
            ok = ok and r.get("status") == "FINISHED"
        if "unavailable" in r:
            self.unavailable = str(r["unavailable"])
        d["ok"] = ok
        if ok:
            rows = int(r["rows"])
            d["rows"] = rows
            d["rows_per_s"] = rows / float(r["seconds"]) if r.get("seconds") else None
            d["wall_rows_per_s"] = rows / s.wall
        self.samples.append(d)

    def median(self, key: str) -> float | None:
        vals = [s[key] for s in self.samples if s.get("ok") and s.get(key) is not None]
        return statistics.median(vals) if vals else None

    def error(self) -> str | None:
        bad = [s for s in self.samples if not s.get("ok")]
        if not bad or any(s.get("ok") for s in self.samples):
            return None
        r = bad[-1].get("result") or {}
        return str(r.get("error") or r.get("unavailable") or bad[-1].get("stderr_tail", "")[-400:])


def summarize(entries: list[Entry], bytes_per_row: float) -> list[dict[str, Any]]:
    """Medians per entry and ratios to the baselines measured in the same run."""

    def rate(name: str, workers: int | None = None) -> float | None:
        cands = [e for e in entries if e.name == name and (workers is None or e.workers == workers)]
        if not cands and workers is not None:  # a single-process baseline compares to every N
            cands = [e for e in entries if e.name == name]
        return cands[0].median("rows_per_s") if cands else None

    out = []
    for e in entries:
        rps = e.median("rows_per_s")
        row: dict[str, Any] = {
            "name": e.name,
            "workers": e.workers,
            "rows": e.rows,
            "rows_per_s": rps,
            "wall_rows_per_s": e.median("wall_rows_per_s"),
            "mb_per_s": rps * bytes_per_row / MB if rps else None,
            "peak_rss_mb": e.median("peak_rss_mb"),
            "max_process_rss_mb": _max_proc(e),
            "cpu_client_s": e.median("cpu_client_s"),
            "cpu_server_s": e.median("cpu_server_s"),
            "cpu_sink_s": e.median("cpu_sink_s"),
            "wall_s": e.median("wall"),
            "ok_samples": sum(1 for s in e.samples if s.get("ok")),
            "error": e.error(),
            "unavailable": e.unavailable,
        }
        for key, base, w in [
            ("x_read_limit", "read limit", e.workers),
            ("x_old", "old approach", 1),
            ("x_rows_bson", "rows+bson.encode", 1),
            ("x_connectorx", "connectorx+pymongoarrow", e.workers),
        ]:
            b = rate(base, w)
            row[key] = rps / b if rps and b else None
        out.append(row)
    return out


def _max_proc(e: Entry) -> float | None:
    peaks = [
        max(s["per_process_peak_mb"].values(), default=0.0)
        for s in e.samples
        if s.get("ok") and s.get("per_process_peak_mb")
    ]
    return statistics.median(peaks) if peaks else None


def _f(v: Any, fmt: str) -> str:
    return "-" if v is None else format(v, fmt)


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "name",
        "N",
        "rows/s",
        "MB/s",
        "wall r/s",
        "RSS MB",
        "max proc",
        "x read",
        "x old",
        "x rows+bson",
        "x cx",
        "cpu cli/pg/sink s",
    )
    lines = [head]
    for r in rows:
        if r["rows_per_s"] is None:
            why = r["unavailable"] or r["error"] or "no successful sample"
            lines.append(
                (
                    r["name"],
                    str(r["workers"]),
                    "unavailable" if r["unavailable"] else "error",
                    why.replace("\n", " ")[:70],
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                    "",
                )
            )
            continue
        cpu = "/".join(_f(r[k], ".1f") for k in ("cpu_client_s", "cpu_server_s", "cpu_sink_s"))
        lines.append(
            (
                r["name"],
                str(r["workers"]),
                _f(r["rows_per_s"], ",.0f"),
                _f(r["mb_per_s"], ".1f"),
                _f(r["wall_rows_per_s"], ",.0f"),
                _f(r["peak_rss_mb"], ".0f"),
                _f(r["max_process_rss_mb"], ".0f"),
                _f(r["x_read_limit"], ".2f"),
                _f(r["x_old"], ".2f"),
                _f(r["x_rows_bson"], ".2f"),
                _f(r["x_connectorx"], ".2f"),
                cpu,
            )
        )
    normal = [line for line in lines if line[2] not in ("error", "unavailable")]
    widths = [max(len(line[i]) for line in normal) for i in range(len(head))]
    fmt_rows = []
    for i, line in enumerate(lines):
        if line[2] in ("error", "unavailable"):
            fmt_rows.append(f"{line[0]:<{widths[0]}}  {line[1]:>{widths[1]}}  {line[2]}: {line[3]}")
            continue
        fmt_rows.append(
            "  ".join(
                c.ljust(widths[j]) if j == 0 else c.rjust(widths[j]) for j, c in enumerate(line)
            )
        )
        if i == 0:
            fmt_rows.append("-" * len(fmt_rows[0]))
    return "\n".join(fmt_rows)


def markdown(rows: list[dict[str, Any]]) -> str:
    out = [
        "| name | N | rows/s | MB/s | peak RSS MB | × read limit | × old | × rows+bson | × cx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if r["rows_per_s"] is None:
            why = (r["unavailable"] or r["error"] or "").replace("\n", " ").replace("|", "/")[:80]
            out.append(f"| {r['name']} | {r['workers']} | {why} | | | | | | |")
            continue
        out.append(
            f"| {r['name']} | {r['workers']} | {r['rows_per_s']:,.0f} | {_f(r['mb_per_s'], '.1f')} "
            f"| {_f(r['peak_rss_mb'], '.0f')} | {_f(r['x_read_limit'], '.2f')} "
            f"| {_f(r['x_old'], '.2f')} | {_f(r['x_rows_bson'], '.2f')} "
            f"| {_f(r['x_connectorx'], '.2f')} |"
        )
    return "\n".join(out)


def machine() -> dict[str, Any]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for pkg in (
        "psycopg",
        "psycopg-binary",
        "pymongo",
        "numpy",
        "numba",
        "orjson",
        "psutil",
        "connectorx",
        "pymongoarrow",
        "pyarrow",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        import psycopg

        versions["libpq"] = str(psycopg.pq.version())
    except Exception:  # informational only
        pass
    repo = Path(__file__).resolve().parent.parent
    git = subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    import psutil

    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "mem_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions,
        "git_head": git,
        "loadavg_start": os.getloadavg(),
    }
