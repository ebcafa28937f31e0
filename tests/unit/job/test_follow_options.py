"""copy --follow's options: what cannot work is refused before anything connects (exit 2)."""

from __future__ import annotations

from typing import Any

import pytest

from parallelsync.config import CopyConfig
from parallelsync.errors import UsageError
from parallelsync.job.follow import check_follow_options

MONGO = "mongodb://127.0.0.1:1/"


def cfg(**kw: Any) -> CopyConfig:
    base: dict[str, Any] = {"source": "dbname=x", "table": "t", "target": MONGO, "db": "d",
                            "collection": "t", "slot": "s", "follow": True}  # fmt: skip
    return CopyConfig(**(base | kw))


def test_a_follow_that_can_work_passes() -> None:
    check_follow_options(cfg())
    check_follow_options(cfg(stop_at_end=True, swap_lag_seconds=0, catch_up_timeout_seconds=0))
    check_follow_options(cfg(idle_exit=2.5))
    check_follow_options(cfg(follow=False, slot=None))  # a plain copy: nothing to check


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"slot": None}, "--follow applies the changes made during the copy from its replication "
                         "slot: pass --slot NAME too"),
        ({"target": "null:"}, "a null: target cannot take them"),
        ({"target": "file:/tmp/x"}, "a file: target cannot take them"),
        ({"resume": "last"}, "--follow does not combine with --resume: resume the copy without "
                             "--follow, then run `parallelsync follow --slot s ...`"),
        ({"changed_rows_collection": "c"}, "which --follow streams: leave out one of them"),
        ({"stop_at_end": True, "idle_exit": 3.0}, "exclude each other"),
        ({"idle_exit": 0.0}, "--idle-exit must be more than 0 seconds, got 0"),
        ({"swap_lag_seconds": -1.0}, "--swap-lag-seconds must be 0 or more, got -1"),
        ({"catch_up_timeout_seconds": -2.0}, "must be 0 (no bound) or more, got -2"),
        ({"follow": False, "stop_at_end": True}, "--stop-at-end tell(s) a copy when to stop "
                                                 "following: pass --follow too"),
        ({"follow": False, "idle_exit": 4.0}, "--idle-exit tell(s) a copy"),
    ],
)  # fmt: skip
def test_what_cannot_work_is_a_usage_error(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError) as err:
        check_follow_options(cfg(**kw))
    assert message in str(err.value)
    assert err.value.exit_code == 2
