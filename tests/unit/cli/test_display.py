"""The displays and the phase timer, without servers: what each writes for a run's events."""

from __future__ import annotations

import io
import json

import pytest

from parallelsync.cli.display import JsonDisplay, PlainDisplay, QuietDisplay, make_display
from parallelsync.cli.output import print_phases
from parallelsync.job.report import PHASES, FollowSnapshot, Phases, Snapshot, WorkerLine


def snap(rows: int, estimated: int = 1000, elapsed: float = 2.0) -> Snapshot:
    workers = (WorkerLine(0, "copying", 3, 120), WorkerLine(1, "idle"))
    return Snapshot(rows, rows * 100, estimated, elapsed, workers, ranges_done=2, ranges=8)


def test_snapshot_rates_and_eta() -> None:
    s = snap(500)
    assert (s.rows_per_second, s.mb_per_second, s.fraction, s.eta_seconds) == (
        250.0, 0.025, 0.5, 2.0,
    )  # fmt: skip
    assert snap(500, estimated=0).eta_seconds is None  # no estimate
    assert snap(1200).eta_seconds is None  # more rows than estimated: the estimate says nothing
    assert snap(0).eta_seconds is None  # no rate yet


def test_plain_lines_name_the_phase_and_end_the_copy_with_its_totals() -> None:
    out = io.StringIO()
    display = PlainDisplay(0, out, verbose=False)
    phases = Phases(display)
    with phases.run("preflight"):
        pass
    with phases.run("copy") as rec:
        display.progress(snap(1000))
        display.debug("range 3 done")  # not verbose: left out
        display.warning("a warning, as written")
        rec.rows = 1000
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[preflight] started"
    assert lines[1].startswith("[preflight] done in ") and lines[1].endswith(" s")
    assert lines[2:4] == ["[copy] started", "a warning, as written"]
    assert lines[4] == (
        "[copy] 1.0k rows, ~100% of ~1.0k, 500 rows/s, 0.1 MB/s, ranges 2/8, "
        "workers 1 copying, 1 idle, elapsed 0:00:00"
    )
    assert lines[5].startswith("[copy] done in ")
    assert len(lines) == 6
    assert [d["name"] for d in phases.docs()] == ["preflight", "copy"]
    assert phases.docs()[1]["rows"] == 1000


def test_a_failing_phase_says_so_and_is_recorded_failed() -> None:
    out = io.StringIO()
    ended: list[str] = []
    phases = Phases(PlainDisplay(0, out, verbose=True))
    phases.on_end = lambda: ended.append(phases.records[-1].name)
    with pytest.raises(RuntimeError), phases.run("count"):
        raise RuntimeError("boom")
    assert out.getvalue().splitlines()[-1].startswith("[count] failed after ")
    assert phases.docs()[0]["state"] == "failed" and ended == []
    with phases.run("swap"):
        pass
    assert ended == ["swap"]


def test_json_events_one_per_line() -> None:
    out = io.StringIO()
    display = JsonDisplay(0, out, verbose=True)
    display.phase("copy", "started", 0.0)
    display.progress(snap(400))
    display.debug("range 3 done")
    display.phase("copy", "done", 1.25)
    display.warning("careful")
    events = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert [e["event"] for e in events] == ["phase", "debug", "progress", "phase", "warning"]
    assert events[0] | {"time": None} == {
        "time": None, "event": "phase", "phase": "copy", "state": "started", "elapsed": 0.0,
    }  # fmt: skip
    progress = events[2]
    assert (progress["rows"], progress["bytes"], progress["estimated_rows"]) == (400, 40000, 1000)
    assert progress["eta_seconds"] == 3.0 and progress["ranges"] == 8
    assert progress["workers"][0] == {"worker": 0, "state": "copying", "range": 3, "rows": 120}
    assert events[3]["elapsed"] == 1.25 and events[4]["message"] == "careful"


def test_quiet_keeps_warnings_only() -> None:
    out = io.StringIO()
    for display in (QuietDisplay(out), JsonDisplay(0, out, quiet=True)):
        display.phase("copy", "started", 0.0)
        display.progress(snap(10))
        display.phase("copy", "done", 1.0)
        display.debug("x")
        display.warning("still said")
        display.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "still said" and json.loads(lines[1])["message"] == "still said"
    assert len(lines) == 2


def test_the_display_follows_the_options() -> None:
    pipe = io.StringIO()
    assert isinstance(make_display(quiet=False, verbose=False, log_format="text", interval=5,
                                   stream=pipe), PlainDisplay)  # fmt: skip
    assert isinstance(make_display(quiet=True, verbose=False, log_format="text", interval=5,
                                   stream=pipe), QuietDisplay)  # fmt: skip
    assert isinstance(make_display(quiet=True, verbose=False, log_format="json", interval=5,
                                   stream=pipe), JsonDisplay)  # fmt: skip


def test_every_phase_name_is_known_and_unique() -> None:
    assert len(set(PHASES)) == len(PHASES)
    with pytest.raises(AssertionError), Phases(QuietDisplay(io.StringIO())).run("finalize"):
        pass


def test_the_phase_table(capsys: pytest.CaptureFixture[str]) -> None:
    phases = [
        {"name": "copy", "seconds": 2.0, "rows": 3000, "bytes": 2_500_000,
         "rows_per_second": 1500.0, "state": "done"},
        {"name": "swap", "seconds": 0.25, "rows": 0, "bytes": 0, "rows_per_second": 0,
         "state": "failed"},
    ]  # fmt: skip
    print_phases(phases, [{"range": 4, "rows": 750, "bytes": 1, "seconds": 0.5, "attempts": 1}])
    err = capsys.readouterr().err.splitlines()
    assert err[1].split() == ["phase", "seconds", "rows", "MB", "rows/s"]
    assert err[2].split() == ["copy", "2.00", "3,000", "2.5", "1.5k"]
    assert err[3].split() == ["swap", "0.25", "-", "-", "-", "(failed)"]
    assert err[5].strip() == "slowest ranges:"
    assert err[6].split() == ["range", "4", "750", "rows", "0.50", "s"]


def test_follow_lines_and_events_carry_its_statistics() -> None:
    follow = FollowSnapshot(
        applied_lsn="0/1A2B", transactions=12, changes=3400, elapsed=2.0, server_lsn="0/1F00",
        lag_bytes=2500, lag_seconds=0.75, retained_wal_bytes=3_000_000,
    )  # fmt: skip
    assert follow.changes_per_second == 1700.0
    out = io.StringIO()
    display = PlainDisplay(0, out, verbose=False)
    display.phase("follow", "started", 0.0)
    display.progress(follow)
    display.phase("follow", "done", 2.0)
    lines = out.getvalue().splitlines()
    assert lines[1] == (
        "[follow] 12 transactions, 3.4k changes applied, 1.7k changes/s, at 0/1A2B, "
        "lag 2.5 kB / 0.8 s, slot retains 3.0 MB, elapsed 0:00:02"
    )
    js = io.StringIO()
    jd = JsonDisplay(0, js, verbose=False)
    jd.phase("follow", "started", 0.0)
    jd.progress(follow)
    jd.phase("follow", "done", 2.0)
    events = [json.loads(ln) for ln in js.getvalue().splitlines()]
    progress = events[1]
    assert progress["event"] == "progress" and progress["phase"] == "follow"
    assert (progress["changes"], progress["changes_per_second"]) == (3400, 1700.0)
    assert (progress["lag_bytes"], progress["lag_seconds"]) == (2500, 0.75)
    assert (progress["server_lsn"], progress["retained_wal_bytes"]) == ("0/1F00", 3_000_000)
    unmeasured = FollowSnapshot("0/1", 0, 0, 0.0)
    assert unmeasured.changes_per_second == 0.0 and unmeasured.as_doc()["lag_bytes"] is None
