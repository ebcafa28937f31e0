"""`parallelsync config show`: prints what config/show.py reports (text, or --json)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from parallelsync.cli.output import print_json
from parallelsync.config.options import OPTIONS, options_for
from parallelsync.config.show import effective, format_text
from parallelsync.errors import EXIT_OK, UsageError


def run_config_show(cli: Mapping[str, Any], *, as_json: bool) -> int:
    command = str(cli["for_command"])
    taken = {o.name for o in options_for(command)}
    # The parser took every command's options; one the command would refuse is refused here too.
    foreign = [o.flag for o in OPTIONS if cli.get(o.name) is not None and o.name not in taken]
    if foreign:
        raise UsageError(
            f"{', '.join(foreign)}: not an option of {command} (see parallelsync {command} --help)"
        )
    report = effective(command, cli)
    if as_json:
        print_json(report)
    else:
        print(format_text(report))
    return EXIT_OK
