"""Every subcommand's --help: examples, required options marked from the option table, and no
abbreviated options."""

from __future__ import annotations

import argparse
import re

import pytest

from parallelsync.cli.main import COMMANDS, build_parser, main
from parallelsync.config.options import required_for
from parallelsync.errors import UsageError

HELP_PAGES = [
    *(["slot", a] for a in ("list", "drop")),
    ["config", "show"],
    *([c] for c in COMMANDS),
]


def help_text(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*argv, "--help"])
    assert info.value.code == 0
    out: str = capsys.readouterr().out
    return out


def section(text: str, title: str) -> str:
    """The lines of one argparse section ("required options:", "options:")."""
    m = re.search(rf"^{title}:\n(.*?)(?:\n\n|\Z)", text, re.S | re.M)
    return m.group(1) if m else ""


def flags_in(block: str) -> set[str]:
    return set(re.findall(r"^  (--[a-z-]+)", block, re.M))


@pytest.mark.parametrize("argv", HELP_PAGES, ids=" ".join)
def test_every_help_page_has_examples_of_its_own_command(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    text = help_text(capsys, argv)
    examples = section(text, "Examples")
    commands = re.findall(r"parallelsync ([a-z]+(?: (?:list|drop|show))?)", examples)
    assert len(commands) >= 1
    assert all(c.startswith(" ".join(argv)) for c in commands), commands


def test_copy_marks_source_table_target_as_required(capsys: pytest.CaptureFixture[str]) -> None:
    text = help_text(capsys, ["copy"])
    assert flags_in(section(text, "required options")) == {"--source", "--table", "--target"}
    assert "--workers" in flags_in(section(text, "options"))
    assert text.index("required options:") < text.index("\noptions:")


@pytest.mark.parametrize("argv", [["plan"], ["verify"], ["status"], ["slot", "list"]])
def test_required_options_come_from_the_option_table(
    capsys: pytest.CaptureFixture[str], argv: list[str]
) -> None:
    text = help_text(capsys, argv)
    expected = {o.flag for o in required_for(argv[0])}
    assert expected and flags_in(section(text, "required options")) == expected


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    found = [parser]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found += _parsers(sub)
    return found


def test_no_parser_takes_abbreviations() -> None:
    parsers = _parsers(build_parser())
    assert len(parsers) == 1 + len(COMMANDS) + 2 + 1  # top, commands, slot list|drop, config show
    assert [p.prog for p in parsers if p.allow_abbrev] == []
    for argv in (
        ["copy", "--source", "pg", "--table", "t", "--worker", "4"],
        ["config", "show", "--work", "4"],
        ["slot", "list", "--sour", "pg"],
    ):
        with pytest.raises(UsageError, match="unrecognized arguments"):
            build_parser().parse_args(argv)
