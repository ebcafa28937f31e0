"""docs/configuration.md is the option table as generated, and covers every option."""

from __future__ import annotations

from parallelsync.config.options import OPTIONS
from parallelsync.config.reference import COMMAND, DOC, render


def test_the_checked_in_reference_is_the_generated_one() -> None:
    assert DOC.exists(), f"{DOC} is missing: run `{COMMAND}`"
    assert DOC.read_text() == render(), f"{DOC} is out of date: run `{COMMAND}` and commit it"


def test_every_option_has_a_row_with_flag_variable_and_key() -> None:
    rows = [ln for ln in render().splitlines() if ln.startswith("| `--")]
    assert len(rows) == len(OPTIONS)
    for opt, row in zip(OPTIONS, rows, strict=True):
        assert row.startswith(f"| `{opt.flag}` | `{opt.env_vars[0]}`")
        assert f"| `{opt.name}` |" in row
    slot = next(r for r in rows if r.startswith("| `--slot`"))
    assert "`SLOTNAME`" in slot
    source = next(r for r in rows if r.startswith("| `--source`"))
    assert "copy (required), plan (required), verify (required), status, slot (required)" in source
