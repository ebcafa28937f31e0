"""How a running job looks on stderr: a live display on a terminal, plain lines, JSON events.

Each display is a `Reporter` (job/report.py): the job tells it when a phase starts and ends, hands
it progress snapshots during the worker phase, and passes warnings and (with -v) debug notes. The
live display is rich's `Live`, which redraws on a thread of its own; the plain and JSON ones have
a ticker thread: either way the current phase and its elapsed time keep showing while the job
waits on one long server call (a count, an index build, the rename), so no phase is silent.
docs/progress.md describes the lines and the JSON fields.
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Any, TextIO

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from parallelsync.cdc.slots import human_bytes
from parallelsync.job.progress import duration, human
from parallelsync.job.report import (
    DONE,
    FAILED,
    PROGRESS_PHASES,
    STARTED,
    FollowSnapshot,
    ProgressSnap,
    Snapshot,
)
from parallelsync.logs import json_event

# The live display redraws this often: smooth enough to read rates, cheap for the coordinator.
LIVE_REFRESH_PER_S = 4


def progress_parts(snap: Snapshot) -> list[str]:
    """The totals of a snapshot as short phrases: rows, share of the estimate, rates, ETA."""
    parts = [f"{human(snap.rows)} rows"]
    if snap.fraction is not None:
        parts.append(f"~{snap.fraction * 100:.0f}% of ~{human(snap.estimated)}")
    parts += [f"{human(snap.rows_per_second)} rows/s", f"{snap.mb_per_second:.1f} MB/s"]
    if snap.eta_seconds is not None:
        parts.append(f"ETA {duration(snap.eta_seconds)}")
    if snap.ranges:
        parts.append(f"ranges {snap.ranges_done}/{snap.ranges}")
    return parts


def follow_parts(snap: FollowSnapshot) -> list[str]:
    """follow's statistics as short phrases: applied, rate, position, lag, retained WAL."""
    parts = [
        f"{human(snap.transactions)} transactions, {human(snap.changes)} changes applied",
        f"{human(snap.changes_per_second)} changes/s",
        f"at {snap.applied_lsn}",
    ]
    if snap.lag_bytes is not None:
        lag = f"lag {human_bytes(snap.lag_bytes)}"
        if snap.lag_seconds is not None:
            lag += f" / {snap.lag_seconds:.1f} s"
        parts.append(lag)
    if snap.retained_wal_bytes is not None:
        parts.append(f"slot retains {human_bytes(snap.retained_wal_bytes)}")
    return parts


def worker_summary(snap: Snapshot) -> str:
    counts: dict[str, int] = {}
    for w in snap.workers:
        counts[w.state] = counts.get(w.state, 0) + 1
    return "workers " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))


class _State:
    """The current phase and the latest snapshot, shared with a redraw or ticker thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.phase: str | None = None  # None between phases
        self.since = time.monotonic()
        self.snap: ProgressSnap | None = None

    def set(self, name: str, state: str) -> None:
        with self.lock:
            if state == STARTED:
                self.phase, self.since, self.snap = name, time.monotonic(), None
            elif self.phase == name:
                self.phase = None

    def view(self) -> tuple[str | None, float, ProgressSnap | None]:
        with self.lock:
            return self.phase, time.monotonic() - self.since, self.snap


class LiveDisplay:
    """A terminal: the phase with its elapsed time; during the copy a bar with rows, rates and
    ETA and one line per worker; a spinner during the other phases. Each finished phase stays
    above the live area as one line."""

    def __init__(self, stream: TextIO, *, verbose: bool = False) -> None:
        self._state = _State()
        self._verbose = verbose
        self._console = Console(file=stream, highlight=False)
        self._spinner = Spinner("dots")
        # stdout stays the command's own (the --json result); stray writes to stderr (a
        # driver's warning) are printed above the live area instead of tearing it.
        self._live = Live(
            self, console=self._console, refresh_per_second=LIVE_REFRESH_PER_S, transient=True,
            redirect_stdout=False, redirect_stderr=True,
        )  # fmt: skip
        self._live.start()

    def __rich__(self) -> RenderableType:
        phase, elapsed, snap = self._state.view()
        if phase is None:
            return Text("")
        head = f"{phase}  {duration(elapsed)}"
        if isinstance(snap, FollowSnapshot):
            self._spinner.update(text=Text(head + "  " + ", ".join(follow_parts(snap))))
            return self._spinner
        if phase not in PROGRESS_PHASES or snap is None:
            self._spinner.update(text=Text(head, style="bold"))
            return self._spinner
        bar = ProgressBar(total=snap.estimated or None, completed=snap.rows, width=30)
        top = Table.grid(padding=(0, 1))
        top.add_row(Text(head, style="bold"), bar, Text(", ".join(progress_parts(snap))))
        workers = Table.grid(padding=(0, 2))
        for w in snap.workers:
            where = f"range {w.range_id}" if w.range_id is not None else "-"
            rows = f"{w.rows:,} rows" if w.range_id is not None else ""
            workers.add_row(f"  worker {w.wid}", where, rows, w.state)
        return Group(top, workers)

    def phase(self, name: str, state: str, elapsed: float) -> None:
        self._state.set(name, state)
        if state == DONE:
            self._console.print(f"[green]✓[/] {name} done in {elapsed:.1f} s")
        elif state == FAILED:
            self._console.print(f"[red]✗[/] {name} failed after {elapsed:.1f} s")

    def progress(self, snap: ProgressSnap) -> None:
        with self._state.lock:
            self._state.snap = snap

    def warning(self, message: str) -> None:
        self._console.print(Text(message, style="yellow"))

    def debug(self, message: str) -> None:
        if self._verbose:
            self._console.print(Text(message, style="dim"))

    def close(self) -> None:
        self._live.stop()


class _Ticker:
    """A thread that calls `tick` every `interval` seconds until stopped (0: never)."""

    def __init__(self, interval: float, tick: Any) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if interval > 0:
            self._thread = threading.Thread(
                target=self._run, args=(interval, tick), name="progress", daemon=True
            )
            self._thread.start()

    def _run(self, interval: float, tick: Any) -> None:
        while not self._stop.wait(interval):
            tick()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


class PlainDisplay:
    """No terminal: a line when a phase starts and ends, and every `interval` seconds one that
    names the running phase (its totals and rates during the copy, its elapsed time otherwise)."""

    def __init__(self, interval: float, stream: TextIO, *, verbose: bool = False) -> None:
        self._state = _State()
        self._stream = stream
        self._verbose = verbose
        self._lock = threading.Lock()
        self._ticker = _Ticker(interval, self._tick)

    def _write(self, text: str) -> None:
        with self._lock:
            self._stream.write(text + "\n")
            self._stream.flush()

    def _line(self, phase: str, elapsed: float, snap: ProgressSnap | None) -> str:
        if isinstance(snap, FollowSnapshot):
            return f"[{phase}] " + ", ".join([*follow_parts(snap), f"elapsed {duration(elapsed)}"])
        if phase in PROGRESS_PHASES and snap is not None:
            parts = [*progress_parts(snap), worker_summary(snap), f"elapsed {duration(elapsed)}"]
            return f"[{phase}] " + ", ".join(parts)
        return f"[{phase}] running, elapsed {duration(elapsed)}"

    def _tick(self) -> None:
        phase, elapsed, snap = self._state.view()
        if phase is not None:
            self._write(self._line(phase, elapsed, snap))

    def phase(self, name: str, state: str, elapsed: float) -> None:
        if state != STARTED:
            current, _, snap = self._state.view()
            if current == name and name in PROGRESS_PHASES and snap is not None:
                self._write(self._line(name, elapsed, snap))  # the final totals
        self._state.set(name, state)
        if state == STARTED:
            self._write(f"[{name}] started")
        elif state == DONE:
            self._write(f"[{name}] done in {elapsed:.1f} s")
        else:
            self._write(f"[{name}] failed after {elapsed:.1f} s")

    def progress(self, snap: ProgressSnap) -> None:
        with self._state.lock:
            self._state.snap = snap

    def warning(self, message: str) -> None:
        self._write(message)

    def debug(self, message: str) -> None:
        if self._verbose:
            phase = self._state.view()[0]
            self._write(f"[{phase or '-'}] debug: {message}")

    def close(self) -> None:
        self._ticker.stop()


class JsonDisplay:
    """`--log-format json`: one JSON object per line and event on stderr (docs/progress.md).

    `quiet`: only warnings, errors and the summary, no phase or progress events."""

    def __init__(
        self, interval: float, stream: TextIO, *, verbose: bool = False, quiet: bool = False
    ) -> None:
        self._state = _State()
        self._stream = stream
        self._verbose = verbose
        self._quiet = quiet
        self._lock = threading.Lock()
        self._ticker = _Ticker(0 if quiet else interval, self._tick)

    def emit(self, event: str, **fields: Any) -> None:
        line = json_event(event, **fields)
        with self._lock:
            self._stream.write(line + "\n")
            self._stream.flush()

    def _progress(self, phase: str, snap: ProgressSnap) -> None:
        if isinstance(snap, FollowSnapshot):
            self.emit("progress", phase=phase, elapsed=round(snap.elapsed, 3), **snap.as_doc())
            return
        eta = snap.eta_seconds
        self.emit(
            "progress", phase=phase, rows=snap.rows, bytes=snap.bytes,
            estimated_rows=snap.estimated, elapsed=round(snap.elapsed, 3),
            rows_per_second=round(snap.rows_per_second, 1),
            mb_per_second=round(snap.mb_per_second, 3),
            eta_seconds=None if eta is None else round(eta, 1),
            ranges_done=snap.ranges_done, ranges=snap.ranges,
            workers=[{"worker": w.wid, "state": w.state, "range": w.range_id, "rows": w.rows}
                     for w in snap.workers],
        )  # fmt: skip

    def _tick(self) -> None:
        phase, elapsed, snap = self._state.view()
        if phase is None:
            return
        if phase in PROGRESS_PHASES and snap is not None:
            self._progress(phase, snap)
        else:
            self.emit("phase", phase=phase, state="running", elapsed=round(elapsed, 3))

    def phase(self, name: str, state: str, elapsed: float) -> None:
        if self._quiet:
            return
        if state != STARTED:
            current, _, snap = self._state.view()
            if current == name and name in PROGRESS_PHASES and snap is not None:
                self._progress(name, snap)  # the final totals
        self._state.set(name, state)
        self.emit("phase", phase=name, state=state, elapsed=round(elapsed, 3))

    def progress(self, snap: ProgressSnap) -> None:
        with self._state.lock:
            self._state.snap = snap

    def warning(self, message: str) -> None:
        self.emit("warning", message=message)

    def debug(self, message: str) -> None:
        if self._verbose:
            self.emit("debug", message=message)

    def close(self) -> None:
        self._ticker.stop()


class QuietDisplay:
    """`--quiet`: no progress or phase lines; warnings still show (they say that something is
    not as asked, which must never pass in silence), and errors and the summary are printed by
    the command as always."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def phase(self, name: str, state: str, elapsed: float) -> None:
        pass

    def progress(self, snap: ProgressSnap) -> None:
        pass

    def warning(self, message: str) -> None:
        self._stream.write(message + "\n")
        self._stream.flush()

    def debug(self, message: str) -> None:
        pass

    def close(self) -> None:
        pass


Display = LiveDisplay | PlainDisplay | JsonDisplay | QuietDisplay


def make_display(
    *,
    quiet: bool,
    verbose: bool,
    log_format: str,
    interval: float,
    stream: TextIO | None = None,
) -> Display:
    """The display for these options: JSON if asked; else quiet if asked; else a live display
    when stderr is a terminal, plain lines when it is not (a pipe, a file, a CI log)."""
    stream = stream or sys.stderr
    if log_format == "json":
        return JsonDisplay(interval, stream, verbose=verbose, quiet=quiet)
    if quiet:
        return QuietDisplay(stream)
    if stream.isatty():
        return LiveDisplay(stream, verbose=verbose)
    return PlainDisplay(interval, stream, verbose=verbose)
