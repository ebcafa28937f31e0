"""Command line: parses arguments, dispatches to a command, maps errors to exit codes.

No business logic lives here. One handler turns any `ParallelSyncError` into a one-paragraph
message on stderr and its exit code; `--debug` adds the traceback (for errors raised in a worker
process, the worker's own traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TextIO

from parallelsync import __version__
from parallelsync.cli.help import epilog
from parallelsync.cli.output import ReportedError, print_traceback
from parallelsync.config import build_config, options_for
from parallelsync.config.options import COMMANDS_WITH_OPTIONS, OPTIONS, Option, required_for
from parallelsync.errors import EXIT_FAILED, EXIT_USAGE, ParallelSyncError, UsageError
from parallelsync.logs import configure as configure_logging
from parallelsync.logs import json_event, json_requested
from parallelsync.redact import remember, scrub_known

COMMANDS = {
    "copy": "copy a table into a collection (one snapshot, N workers, atomic swap)",
    "plan": "show the key ranges a copy would use, with estimated rows",
    "verify": "compare a target collection with the source now (counts and checksums per range)",
    "status": "list the job documents of a target, newest first",
    "demo": "run the main job end to end on throwaway PostgreSQL and SecantusDB servers",
    "slot": "list the source's logical replication slots and the WAL each retains, or drop one",
    "follow": "apply the table's changes from a copy's slot to the collection (change capture)",
    "config": "show the effective configuration of a command, and where each value came from",
}
# --help keeps the examples' line breaks (an epilog per subcommand, cli/help.py).
HELP_FORMAT = argparse.RawDescriptionHelpFormatter


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; keep that, but with our message style."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_option(p: argparse.ArgumentParser | argparse._ArgumentGroup, opt: Option) -> None:
    env = ", ".join(opt.env_vars)
    flags = (opt.short, opt.flag) if opt.short else (opt.flag,)
    if opt.type is bool:  # a switch: present means true (env and file take true/false)
        p.add_argument(
            *flags, dest=opt.name, action="store_const", const=True, default=None,
            help=f"{opt.help} (env {env})",
        )  # fmt: skip
        return
    default = "" if opt.default is None else f"; default {opt.default}"
    p.add_argument(
        *flags,
        dest=opt.name,
        default=None,
        metavar="{" + ",".join(opt.choices) + "}" if opt.choices else opt.name.upper(),
        help=f"{opt.help} (env {env}{default})",
    )


def _add_options(
    p: argparse.ArgumentParser, command: str, options: tuple[Option, ...] | None = None
) -> None:
    # Required options get a group of their own, from the option table (`required`), so
    # --help shows what a run cannot do without before the tuning knobs.
    required: argparse.ArgumentParser | argparse._ArgumentGroup = p
    if required_for(command):
        required = p.add_argument_group("required options")
        # Listed first, after any positional arguments (argparse appends new groups).
        p._action_groups.insert(1, p._action_groups.pop())
    for opt in options_for(command) if options is None else options:
        _add_option(required if command in opt.required else p, opt)
    p.add_argument("--config", help="TOML file with any of these options (env PARALLELSYNC_CONFIG)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object with the result on stdout"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def _add_demo_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--rows", type=int, default=100_000, help="rows in the sample table")
    p.add_argument("--workers", type=int, default=2, help="worker processes of the copy")
    p.add_argument("--keep", action="store_true", help="leave the servers running afterwards")
    p.add_argument("--stop", action="store_true", help="stop the servers of a --keep demo")
    p.add_argument(
        "--print-env",
        action="store_true",
        help="print only `export PG=... MONGO=...` on stdout (the demo's output goes to stderr), "
        "for eval; with a --keep demo already running, just print its variables",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False: a typo such as --worker must be an error, not taken as --workers.
    parser = _Parser(
        prog="parallelsync",
        description="Parallel, consistent PostgreSQL -> MongoDB full sync.",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=f"parallelsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(
            name, help=help_text, description=help_text, allow_abbrev=False,
            epilog=epilog(name), formatter_class=HELP_FORMAT,
        )  # fmt: skip
        if name == "demo":
            _add_demo_options(p)
            continue
        if name == "slot":
            _add_slot_actions(p)
            continue
        if name == "config":
            _add_config_actions(p)
            continue
        _add_options(p, name)
        if name == "status":
            p.add_argument("--job", help="show this job's whole document")
            p.add_argument(
                "--limit", type=int, default=10, help="how many jobs to list (default 10)"
            )
    return parser


def _add_slot_actions(p: argparse.ArgumentParser) -> None:
    # The options go on each action's parser only: argparse lets a sub-parser's defaults
    # overwrite values its parent parsed.
    actions = p.add_subparsers(
        dest="slot_action", metavar="ACTION", parser_class=_Parser, required=True
    )
    for action, help_text in (
        (
            "list",
            "every logical slot: plugin, active, retained WAL, confirmed_flush_lsn, publication",
        ),
        ("drop", "drop an inactive slot and the publication parallelsync created under its name"),
    ):
        a = actions.add_parser(
            action, help=help_text, description=help_text, allow_abbrev=False,
            epilog=epilog(f"slot {action}"), formatter_class=HELP_FORMAT,
        )  # fmt: skip
        if action == "drop":
            a.add_argument("slot_name", metavar="NAME", help="the slot to drop")
        _add_options(a, "slot")


def _add_config_actions(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(
        dest="config_action", metavar="ACTION", parser_class=_Parser, required=True
    )
    help_text = (
        "every option of a command with its value and where it came from (flag > environment > "
        "config file > default), passwords masked; connects to nothing"
    )
    a = actions.add_parser(
        "show", help=help_text, description=help_text, allow_abbrev=False,
        epilog=epilog("config show"), formatter_class=HELP_FORMAT,
    )  # fmt: skip
    a.add_argument(
        "--for", dest="for_command", choices=COMMANDS_WITH_OPTIONS, default="copy",
        help="the command whose configuration to show (default copy)",
    )  # fmt: skip
    # Every option of every command: the one --for names is checked after parsing.
    _add_options(a, "config", OPTIONS)


def _dispatch(args: argparse.Namespace) -> int:
    from parallelsync.config.build import unknown_variables

    as_events = "json" in (vars(args).get("log_format"), os.environ.get("PARALLELSYNC_LOG_FORMAT"))
    configure_logging("json" if as_events else "text")
    if args.command != "config":  # config show reports them in its own output
        for warning in unknown_variables(os.environ):
            if as_events:
                print(json_event("warning", message=warning), file=sys.stderr)
                continue
            print(f"parallelsync: warning: {warning}", file=sys.stderr)
    cli = vars(args)
    # Known before anything connects, so no message can show their secrets (redact.py).
    remember(cli.get("source"), cli.get("target"))
    remember(os.environ.get("PARALLELSYNC_SOURCE"), os.environ.get("PARALLELSYNC_TARGET"))
    if cli.get("config") is None:
        cli["config"] = os.environ.get("PARALLELSYNC_CONFIG")
    if args.command == "demo":
        from parallelsync.demo.run import print_kept_env, run_demo, stop_kept

        if args.stop:
            return stop_kept()
        if args.print_env and not args.keep:
            return print_kept_env()
        return run_demo(args.rows, args.workers, args.keep, print_env=args.print_env)
    if args.command == "config":
        from parallelsync.cli.config_cmd import run_config_show

        return run_config_show(cli, as_json=args.json)
    if args.command == "status":
        from parallelsync.cli.status import run_status

        return run_status(cli, as_json=args.json)
    if args.command == "slot":
        from parallelsync.cli.slot import run_slot

        return run_slot(cli, as_json=args.json)
    from parallelsync.cli import commands

    cfg = build_config(args.command, cli)
    run = {"copy": commands.run_copy, "plan": commands.run_plan, "verify": commands.run_verify,
           "follow": commands.run_follow}  # fmt: skip
    return run[args.command](cfg, as_json=args.json, debug=args.debug)


def _show_warning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    file: TextIO | None = None,
    line: str | None = None,
) -> None:
    # Driver warnings can quote a connection string too (pymongo's about URI options).
    text = warnings.formatwarning(message, category, filename, lineno, line)
    (file or sys.stderr).write(scrub_known(text))


def _json_logs(args: list[str]) -> bool:
    """Whether errors that reach main should be JSON events."""
    return json_requested(args, os.environ)


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    warnings.showwarning = _show_warning
    debug = "--debug" in args_list
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if not args.command:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        return _dispatch(args)
    except ParallelSyncError as exc:
        if debug:
            print_traceback((exc.__cause__ or exc) if isinstance(exc, ReportedError) else exc)
        if isinstance(exc, ReportedError):
            pass  # the display reported it already, as a JSON event
        elif _json_logs(args_list):
            print(json_event("error", message=str(exc), exit_code=exc.exit_code), file=sys.stderr)
        else:
            print(f"parallelsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("parallelsync: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of our output went away (`plan | head`): not an error of ours. Point stdout
        # at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except Exception as exc:
        if debug:
            print_traceback(exc)
        print(
            f"parallelsync: internal error: {scrub_known(repr(exc))} "
            "(run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED
