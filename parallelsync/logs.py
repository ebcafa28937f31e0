"""Where the package's log records go: one line each on stderr, as the text warnings the CLI
prints or as the JSON events of `--log-format json` (docs/progress.md).

The few log records are warnings of a fallback (the compiled read loop or transcoder not used),
and most are written in worker processes, which start from a fork server that never ran the CLI:
so the coordinator configures this at start and every worker again from its WorkerSetup. Without
it, Python's last-resort handler would print bare text into a stream of JSON events."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from parallelsync.redact import scrub_known

LOGGER = "parallelsync"


def json_event(event: str, **fields: Any) -> str:
    """One line of `--log-format json`: time, event, then the fields."""
    obj = {"time": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds"), "event": event}
    return json.dumps(obj | fields, default=str)


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return f"parallelsync: {record.levelname.lower()}: {scrub_known(record.getMessage())}"


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json_event(
            record.levelname.lower(), message=scrub_known(record.getMessage()), logger=record.name
        )


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """Ours, so that configuring again replaces it instead of printing each record twice."""


def configure(log_format: str) -> None:
    """Send the package's records (WARNING and above) to stderr in `log_format` (text|json)."""
    logger = logging.getLogger(LOGGER)
    for old in [h for h in logger.handlers if isinstance(h, _Handler)]:
        logger.removeHandler(old)
    handler = _Handler(sys.stderr)
    handler.setFormatter(_Json() if log_format == "json" else _Text())
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING)
    logger.propagate = False


def json_requested(args: Sequence[str], env: Mapping[str, str]) -> bool:
    """`--log-format json` on the command line or PARALLELSYNC_LOG_FORMAT=json, read before the
    options are parsed (an error in the options themselves, or a warning while the package
    loads, comes before the value is known from the config file)."""
    for i, arg in enumerate(args):
        if arg == "--log-format" and i + 1 < len(args):
            return args[i + 1] == "json"
        if arg.startswith("--log-format="):
            return arg.split("=", 1)[1] == "json"
    return env.get("PARALLELSYNC_LOG_FORMAT") == "json"
