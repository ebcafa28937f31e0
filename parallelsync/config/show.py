"""`parallelsync config show`: the effective configuration of a command, and where each value
came from (flag > environment > config file > default), with secrets masked.

Pure: reads the parsed flags, the environment and the config file it is given, connects to
nothing, and checks only what `resolve` checks (a value that does not parse is an error naming
its origin). A required option that is missing is shown as missing rather than refused: the
point of the command is to see what a run would get.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from parallelsync.config.build import (
    Origin,
    check_file_keys,
    default_collection,
    load_file,
    resolve,
    unknown_variables,
)
from parallelsync.config.options import Option, options_for
from parallelsync.redact import redact_dsn, scrub_for
from parallelsync.targets import kind_of
from parallelsync.targets.uri import uri_database

MASK = "***"


def shown_value(opt: Option, value: Any, connections: tuple[str, ...]) -> Any:
    """The value as it may be printed: a connection string without its password, a secret
    value as ***, and any other text without the secrets of the connection strings."""
    if value is None or isinstance(value, bool | int | float):
        return value
    text = str(value)
    if opt.secret == "value":
        return MASK if text else text
    if opt.secret == "connection":
        text = redact_dsn(text)
    return scrub_for(text, *connections)


def effective(
    command: str, cli: Mapping[str, Any], env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The report `config show` prints: every option of `command` with value and origin."""
    env = os.environ if env is None else env
    path = cli.get("config")
    file = load_file(path)
    check_file_keys(file)
    has_mapping = isinstance(file.pop("mapping", None), dict)
    options = options_for(command)
    resolved = resolve(options, cli, env, file)
    _derive(resolved)
    connections = tuple(
        str(v) for name, (v, _) in resolved.items() if v and name in ("source", "target")
    )
    rows: dict[str, dict[str, Any]] = {}
    for opt in options:
        value, origin = resolved[opt.name]
        row: dict[str, Any] = {
            "value": shown_value(opt, value, connections),
            "source": origin.kind,
            "from": origin.detail,
        }
        if command in opt.required and not value:
            row["missing"] = "required"
        rows[opt.name] = row
    return {
        "command": command,
        "config_file": path or None,
        "mapping": has_mapping,
        "options": rows,
        "warnings": unknown_variables(env),
    }


def _derive(resolved: dict[str, tuple[Any, Origin]]) -> None:
    """Defaults that follow from other options, as a run computes them (config/build.py)."""
    if "db" in resolved and resolved["db"][0] is None:
        target = resolved["target"][0]
        if target and kind_of(str(target)) == "mongodb" and uri_database(str(target)):
            resolved["db"] = (uri_database(str(target)), Origin("derived", "the --target URI"))
    if "collection" in resolved and not resolved["collection"][0]:
        table = resolved.get("table", (None, None))[0]
        if table:
            resolved["collection"] = (
                default_collection(str(table)),
                Origin("derived", "the --table name"),
            )


def format_text(report: Mapping[str, Any]) -> str:
    """The report as aligned lines: option, value, where it came from."""
    rows = report["options"]
    lines = [
        f"configuration of `parallelsync {report['command']}` "
        "(precedence: flag > environment > config file > default)"
    ]
    if report["config_file"]:
        lines.append(f"config file: {report['config_file']}")
    width = max((len(name) for name in rows), default=0) + 2  # with the leading "--"
    vwidth = min(48, max((len(_text(r["value"])) for r in rows.values()), default=0))
    for name, row in rows.items():
        flag = "--" + name.replace("_", "-")
        where = _where(row["source"], row["from"])
        if row.get("missing"):
            where = "missing: required"
        lines.append(f"  {flag:<{width}}  {_text(row['value']):<{vwidth}}  {where}")
    if report["mapping"]:
        lines.append("  [mapping]: from the config file (docs/mapping.md)")
    lines.extend(f"warning: {w}" for w in report["warnings"])
    return "\n".join(lines)


def _where(kind: str, detail: str) -> str:
    if kind == "env":
        return f"env {detail}"
    if kind == "file":
        return f"config file, key {detail!r}"
    if kind == "derived":
        return f"derived from {detail}"
    return kind  # flag, default


def _text(value: Any) -> str:
    if value is None:
        return "(not set)"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
