"""`parallelsync config show`: every option's value and origin, secrets masked, typos named."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from parallelsync.cli.main import main
from parallelsync.config.options import options_for
from parallelsync.redact import forget_all


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in list(os.environ):
        if var.startswith("PARALLELSYNC_") or var == "SLOTNAME":
            monkeypatch.delenv(var)
    yield
    forget_all()  # main() remembers the secrets it saw; other tests' messages must not lose them


def show(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["config", "show", *args])
    out, err = capsys.readouterr()
    return rc, out, err


def show_json(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    rc, out, err = show(capsys, *args, "--json")
    assert rc == 0, err
    report: dict[str, Any] = json.loads(out)
    return report


@pytest.mark.parametrize(
    ("flag", "conn", "shown"),
    [
        ("--source", "postgresql://u:secret@h/db", "postgresql://u:***@h/db"),
        ("--source", "host=h dbname=db user=u password=secret", "password=***"),
        ("--target", "mongodb://u:secret@h/", "mongodb://u:***@h/"),
        ("--target", "mongodb://h/shop?authSource=admin&password=secret", "password=***"),
    ],
)
def test_passwords_in_dsns_and_uris_are_masked(
    capsys: pytest.CaptureFixture[str], flag: str, conn: str, shown: str
) -> None:
    args = ["--source", "postgresql://u@h/db", "--table", "t", "--target", "null:"]
    args[args.index(flag) + 1] = conn
    rc, out, err = show(capsys, *args)
    assert rc == 0, err
    assert "secret" not in out + err
    line = next(ln for ln in out.splitlines() if ln.strip().startswith(flag + " "))
    assert shown in line and line.rstrip().endswith("flag")
    report = show_json(capsys, *args)
    assert "secret" not in json.dumps(report)
    assert shown in report["options"][flag[2:]]["value"]


def test_a_password_echoed_into_another_option_is_masked_too(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = show_json(
        capsys, "--source", "postgresql://u:hunter22@h/db", "--table", "t", "--target", "null:",
        "--where", "note <> 'hunter22'",
    )  # fmt: skip
    assert report["options"]["where"]["value"] == "note <> '***'"


def test_flag_beats_environment_beats_file_beats_default(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toml = tmp_path / "job.toml"
    toml.write_text('workers = 3\nbatch_rows = 500\nverify = "checksum"\ntable = "from_file"\n')
    monkeypatch.setenv("PARALLELSYNC_WORKERS", "6")
    monkeypatch.setenv("PARALLELSYNC_BATCH_ROWS", "700")
    monkeypatch.setenv("SLOTNAME", "legacy_slot")
    monkeypatch.setenv("PARALLELSYNC_SOURCE", "postgresql://u:envsecret@h/db")
    report = show_json(
        capsys, "--config", str(toml), "--workers", "8", "--target", "mongodb://m/shop"
    )
    opts = report["options"]
    assert report["config_file"] == str(toml)
    assert opts["workers"] == {"value": 8, "source": "flag", "from": "--workers"}
    assert opts["batch_rows"] == {"value": 700, "source": "env", "from": "PARALLELSYNC_BATCH_ROWS"}
    assert opts["verify"] == {"value": "checksum", "source": "file", "from": "verify"}
    assert opts["slot"] == {"value": "legacy_slot", "source": "env", "from": "SLOTNAME"}
    assert opts["source"]["value"] == "postgresql://u:***@h/db"
    assert opts["source"]["source"] == "env"
    assert opts["max_attempts"] == {"value": 3, "source": "default", "from": ""}
    assert opts["db"] == {"value": "shop", "source": "derived", "from": "the --target URI"}
    assert opts["collection"]["value"] == "from_file"
    assert opts["collection"]["source"] == "derived"
    assert set(opts) == {o.name for o in options_for("copy")}

    rc, out, _ = show(capsys, "--config", str(toml), "--workers", "8")
    assert rc == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  --")}
    assert lines["--workers"].split()[1:] == ["8", "flag"]
    assert lines["--batch-rows"].split()[1:] == ["700", "env", "PARALLELSYNC_BATCH_ROWS"]
    assert lines["--verify"].split()[1:] == ["checksum", "config", "file,", "key", "'verify'"]
    assert lines["--max-attempts"].split()[1:] == ["3", "default"]
    assert lines["--target"].split()[1:] == ["(not", "set)", "missing:", "required"]


def test_unknown_variable_is_reported_with_the_closest_option(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELSYNC_WOKERS", "4")
    expected = (
        "unknown environment variable PARALLELSYNC_WOKERS is ignored "
        "(did you mean PARALLELSYNC_WORKERS, for --workers?)"
    )
    rc, out, err = show(capsys, "--table", "t")
    assert rc == 0
    assert f"warning: {expected}" in out.splitlines()
    assert expected not in err  # reported once, in the command's own output
    assert show_json(capsys, "--table", "t")["warnings"] == [expected]


def test_for_another_command_shows_its_options_and_refuses_others(
    capsys: pytest.CaptureFixture[str],
) -> None:
    report = show_json(capsys, "--for", "plan", "--table", "t")
    assert report["command"] == "plan"
    assert set(report["options"]) == {o.name for o in options_for("plan")}
    assert "target" not in report["options"]
    assert report["options"]["source"]["missing"] == "required"
    rc, _, err = show(capsys, "--for", "plan", "--slot", "s", "--target", "null:")
    assert rc == 2
    assert "--target, --slot: not an option of plan (see parallelsync plan --help)" in err


def test_a_bad_value_is_refused_naming_where_it_came_from(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PARALLELSYNC_WORKERS", "many")
    rc, out, err = show(capsys, "--table", "t")
    assert rc == 2 and out == ""
    assert "environment variable PARALLELSYNC_WORKERS: 'many' is not a valid int" in err
