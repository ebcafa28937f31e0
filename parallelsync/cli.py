"""Command line: parses arguments, dispatches to a command, maps errors to exit codes.

No business logic lives here. One handler turns any `ParallelSyncError` into a one-paragraph
message on stderr and its exit code; `--debug` adds the traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from collections.abc import Sequence
from typing import Any

from parallelsync import __version__
from parallelsync.config import COPY_OPTIONS, Option, build_copy_config
from parallelsync.errors import EXIT_FAILED, EXIT_USAGE, ParallelSyncError, UsageError


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on bad usage; keep that, but with our message style."""

    def error(self, message: str) -> Any:
        raise UsageError(f"{message} (see {self.prog} --help)")


def _add_options(p: argparse.ArgumentParser, options: Sequence[Option]) -> None:
    for opt in options:
        flag = "--" + opt.name.replace("_", "-")
        env = ", ".join([f"PARALLELSYNC_{opt.name.upper()}", *opt.env])
        default = "" if opt.default is None else f"; default {opt.default}"
        p.add_argument(
            flag,
            dest=opt.name,
            default=None,
            metavar="{" + ",".join(opt.choices) + "}" if opt.choices else opt.name.upper(),
            help=f"{opt.help} (env {env}{default})",
        )
    p.add_argument("--config", help="TOML file with any of these options (env PARALLELSYNC_CONFIG)")
    p.add_argument(
        "--json", action="store_true", help="print one JSON object with the result on stdout"
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="parallelsync", description="Parallel, consistent PostgreSQL -> MongoDB full sync."
    )
    parser.add_argument("--version", action="version", version=f"parallelsync {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    copy = sub.add_parser(
        "copy", help="copy a table into a collection (one snapshot, N workers, atomic swap)"
    )
    _add_options(copy, COPY_OPTIONS)
    plan = sub.add_parser("plan", help="show the key ranges a copy would use, with estimated rows")
    _add_options(plan, COPY_OPTIONS)
    verify = sub.add_parser(
        "verify",
        help="compare a target collection with the source now (counts and checksums per range)",
    )
    _add_options(verify, COPY_OPTIONS)
    from parallelsync.status import STATUS_OPTIONS

    status = sub.add_parser("status", help="list the job documents of a target, newest first")
    _add_options(status, STATUS_OPTIONS)
    status.add_argument("--job", help="show this job's whole document")
    status.add_argument("--limit", type=int, default=10, help="how many jobs to list (default 10)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if not args.command:
            parser.print_help(sys.stderr)
            return EXIT_USAGE
        cli = vars(args)
        if cli.get("config") is None:
            import os

            cli["config"] = os.environ.get("PARALLELSYNC_CONFIG")
        if args.command == "copy":
            from parallelsync.commands import run_copy

            return run_copy(build_copy_config(cli), as_json=args.json)
        if args.command == "plan":
            from parallelsync.commands import run_plan

            return run_plan(build_copy_config(cli), as_json=args.json)
        if args.command == "status":
            from parallelsync.status import run_status

            return run_status(cli, as_json=args.json)
        if args.command == "verify":
            from parallelsync.commands import run_verify

            return run_verify(build_copy_config(cli), as_json=args.json)
        raise UsageError(f"unknown command {args.command!r}")
    except ParallelSyncError as exc:
        if debug:
            traceback.print_exc()
        print(f"parallelsync: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("parallelsync: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug:
            traceback.print_exc()
        print(
            f"parallelsync: internal error: {exc!r} (run with --debug for the traceback)",
            file=sys.stderr,
        )
        return EXIT_FAILED


def print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, default=str), flush=True)
