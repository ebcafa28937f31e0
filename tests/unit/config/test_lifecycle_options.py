"""--stall-seconds, --lock-timeout-seconds and the MongoDB call bounds: defaults, flag and
environment, bad values."""

from __future__ import annotations

import pytest

from parallelsync.config import build_copy_config
from parallelsync.errors import EXIT_USAGE, UsageError

BASE = {"source": "postgresql://x/db", "table": "t", "target": "null:"}


def test_defaults() -> None:
    cfg = build_copy_config(BASE, env={})
    assert cfg.stall_seconds == 60.0
    assert cfg.lock_timeout_seconds == 10.0
    assert cfg.target_timeout_seconds == 300.0 and cfg.long_timeout_seconds == 86_400.0


def test_target_timeouts_from_flag_and_environment() -> None:
    cfg = build_copy_config(
        {**BASE, "target_timeout_seconds": "20"},
        env={"PARALLELSYNC_LONG_TIMEOUT_SECONDS": "7200"},
    )
    assert cfg.target_timeout_seconds == 20.0 and cfg.long_timeout_seconds == 7200.0


def test_flags_and_environment() -> None:
    cfg = build_copy_config(
        {**BASE, "stall_seconds": "3"}, env={"PARALLELSYNC_LOCK_TIMEOUT_SECONDS": "2.5"}
    )
    assert cfg.stall_seconds == 3.0
    assert cfg.lock_timeout_seconds == 2.5


def test_zero_turns_them_off() -> None:
    cfg = build_copy_config({**BASE, "stall_seconds": "0", "lock_timeout_seconds": "0"}, env={})
    assert cfg.stall_seconds == 0.0 and cfg.lock_timeout_seconds == 0.0


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("stall_seconds", "-1", "--stall-seconds must be 0 (off) or more seconds, got -1.0"),
        (
            "lock_timeout_seconds",
            "-5",
            "--lock-timeout-seconds must be 0 (off) or more seconds, got -5.0",
        ),
        ("stall_seconds", "nan", "--stall-seconds must be 0 (off) or more seconds, got nan"),
        ("lock_timeout_seconds", "inf", "--lock-timeout-seconds must be 0 (off) or more"),
        ("stall_seconds", "soon", "--stall-seconds: 'soon' is not a valid float"),
        ("target_timeout_seconds", "-1", "--target-timeout-seconds must be 0 (off) or more"),
        ("long_timeout_seconds", "inf", "--long-timeout-seconds must be 0 (off) or more"),
    ],
)
def test_bad_values_are_refused(name: str, value: str, message: str) -> None:
    with pytest.raises(UsageError) as err:
        build_copy_config({**BASE, name: value}, env={})
    assert message in str(err.value)
    assert err.value.exit_code == EXIT_USAGE
