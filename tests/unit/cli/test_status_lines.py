"""The status line's elapsed time: recorded seconds, or the time since start when none is."""

from __future__ import annotations

import datetime as dt
import re

from parallelsync.cli.status import elapsed_text


def test_recorded_seconds_are_shown() -> None:
    job = {"elapsed": 12.5, "started_at": dt.datetime(2026, 1, 1)}
    assert elapsed_text(job) == "elapsed 12.5 s"


def test_a_job_without_recorded_seconds_shows_time_since_start() -> None:
    # pymongo hands back naive UTC datetimes; a document written before its first progress
    # update has "elapsed": None.
    started = (dt.datetime.now(dt.UTC) - dt.timedelta(seconds=90)).replace(tzinfo=None)
    text = elapsed_text({"elapsed": None, "started_at": started})
    match = re.fullmatch(r"running for (\d+) s", text)
    assert match and 89 <= int(match.group(1)) <= 120, text


def test_nothing_known_says_so() -> None:
    assert elapsed_text({"elapsed": None}) == "elapsed unknown"
    assert elapsed_text({}) == "elapsed unknown"
