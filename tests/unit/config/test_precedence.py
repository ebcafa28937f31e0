"""Configuration precedence (flag > environment > config file > default) and the CLI parser.

No servers: `build_config` only reads the dicts and the TOML file it is given.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from parallelsync.cli.main import build_parser
from parallelsync.config import CopyConfig, build_config
from parallelsync.errors import EXIT_USAGE, UsageError

BASE: dict[str, Any] = {"source": "postgresql://u@h/db", "table": "orders", "target": "null:"}


def write_toml(tmp_path: Path, text: str) -> str:
    path = tmp_path / "job.toml"
    path.write_text(text)
    return str(path)


def build(
    command: str = "copy",
    cli: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
    toml: str | None = None,
    tmp_path: Path | None = None,
    base: dict[str, Any] | None = None,
) -> CopyConfig:
    args: dict[str, Any] = dict(BASE if base is None else base)
    args.update(cli or {})
    if toml is not None:
        assert tmp_path is not None
        args["config"] = write_toml(tmp_path, toml)
    return build_config(command, args, env or {})


def usage_error(**kwargs: Any) -> str:
    with pytest.raises(UsageError) as info:
        build(**kwargs)
    assert info.value.exit_code == EXIT_USAGE
    return str(info.value)


# ------------------------------------------------------------------------------- precedence
FILE_ALL = """
workers = 3
where = "region = 'file'"
progress_seconds = 30.5
nulls = "omit"
"""


def test_defaults_when_nothing_is_given() -> None:
    cfg = build()
    assert (cfg.workers, cfg.where, cfg.progress_seconds, cfg.nulls) == (2, None, 5.0, "null")
    assert (cfg.max_attempts, cfg.ranges_per_worker, cfg.slot, cfg.key) == (3, 4, None, None)
    assert cfg.command == "copy"


def test_config_file_beats_defaults(tmp_path: Path) -> None:
    cfg = build(toml=FILE_ALL, tmp_path=tmp_path)
    assert cfg.workers == 3
    assert cfg.where == "region = 'file'"
    assert cfg.progress_seconds == 30.5
    assert cfg.nulls == "omit"


def test_copy_table_in_the_file(tmp_path: Path) -> None:
    cfg = build(toml="[copy]\n" + FILE_ALL, tmp_path=tmp_path)
    assert (cfg.workers, cfg.where, cfg.progress_seconds, cfg.nulls) == (
        3,
        "region = 'file'",
        30.5,
        "omit",
    )


def test_environment_beats_config_file(tmp_path: Path) -> None:
    env = {
        "PARALLELSYNC_WORKERS": "5",
        "PARALLELSYNC_WHERE": "region = 'env'",
        "PARALLELSYNC_PROGRESS_SECONDS": "0.25",
        "PARALLELSYNC_NULLS": "null",
    }
    cfg = build(env=env, toml="[copy]\n" + FILE_ALL, tmp_path=tmp_path)
    assert (cfg.workers, cfg.where, cfg.progress_seconds, cfg.nulls) == (
        5,
        "region = 'env'",
        0.25,
        "null",
    )


def test_flag_beats_environment_and_file(tmp_path: Path) -> None:
    env = {
        "PARALLELSYNC_WORKERS": "5",
        "PARALLELSYNC_WHERE": "region = 'env'",
        "PARALLELSYNC_PROGRESS_SECONDS": "0.25",
        "PARALLELSYNC_NULLS": "null",
    }
    cli = {"workers": "7", "where": "region = 'flag'", "progress_seconds": "1.5", "nulls": "omit"}
    cfg = build(cli=cli, env=env, toml=FILE_ALL.replace("omit", "null"), tmp_path=tmp_path)
    assert (cfg.workers, cfg.where, cfg.progress_seconds, cfg.nulls) == (
        7,
        "region = 'flag'",
        1.5,
        "omit",
    )


def test_each_option_takes_its_own_highest_source(tmp_path: Path) -> None:
    # workers from the flag, where from the environment, nulls from the file, the rest default.
    cfg = build(
        cli={"workers": "9"},
        env={"PARALLELSYNC_WHERE": "x > 1", "PARALLELSYNC_WORKERS": "4"},
        toml='nulls = "omit"\nworkers = 3\nwhere = "x > 2"\n',
        tmp_path=tmp_path,
    )
    assert (cfg.workers, cfg.where, cfg.nulls, cfg.progress_seconds) == (9, "x > 1", "omit", 5.0)


def test_empty_environment_variable_counts_as_unset(tmp_path: Path) -> None:
    cfg = build(env={"PARALLELSYNC_WORKERS": ""}, toml="workers = 6\n", tmp_path=tmp_path)
    assert cfg.workers == 6


def test_required_options_from_environment_and_file(tmp_path: Path) -> None:
    cfg = build(
        base={},
        env={"PARALLELSYNC_SOURCE": "postgresql://env/db"},
        toml='table = "sales.orders"\ntarget = "mongodb://file/"\ndb = "shop"\n',
        tmp_path=tmp_path,
    )
    assert (cfg.source, cfg.table, cfg.target, cfg.db) == (
        "postgresql://env/db",
        "sales.orders",
        "mongodb://file/",
        "shop",
    )


# ------------------------------------------------------------------------------------- slot
def test_slotname_sets_the_slot() -> None:
    assert build(env={"SLOTNAME": "legacy"}).slot == "legacy"


def test_parallelsync_slot_wins_over_slotname(tmp_path: Path) -> None:
    env = {"SLOTNAME": "legacy", "PARALLELSYNC_SLOT": "modern"}
    assert build(env=env).slot == "modern"
    assert build(env={"SLOTNAME": "legacy"}, toml='slot = "file"', tmp_path=tmp_path).slot == (
        "legacy"
    )
    assert build(cli={"slot": "flag"}, env=env).slot == "flag"


# ------------------------------------------------------------------------------- bad values
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (
            {"env": {"PARALLELSYNC_WORKERS": "x"}},
            "environment variable PARALLELSYNC_WORKERS: 'x' is not a valid int",
        ),
        ({"cli": {"workers": "many"}}, "--workers: 'many' is not a valid int"),
        (
            {"cli": {"progress_seconds": "soon"}},
            "--progress-seconds: 'soon' is not a valid float",
        ),
        (
            {"env": {"PARALLELSYNC_NULLS": "maybe"}},
            "environment variable PARALLELSYNC_NULLS: 'maybe' is not one of null, omit",
        ),
        ({"cli": {"nulls": "OMIT"}}, "--nulls: 'OMIT' is not one of null, omit"),
        (
            {"env": {"SLOTNAME": "s", "PARALLELSYNC_MAX_ATTEMPTS": "2x"}},
            "environment variable PARALLELSYNC_MAX_ATTEMPTS: '2x' is not a valid int",
        ),
        ({"cli": {"workers": "0"}}, "--workers must be at least 1, got 0"),
        ({"cli": {"max_attempts": "0"}}, "--max-attempts must be at least 1, got 0"),
    ],
)
def test_bad_values_name_their_origin(kwargs: dict[str, Any], message: str) -> None:
    assert usage_error(**kwargs) == message


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('workers = "x"', "config key 'workers': 'x' is not a valid int"),
        (
            'progress_seconds = "later"',
            "config key 'progress_seconds': 'later' is not a valid float",
        ),
        ('nulls = "maybe"', "config key 'nulls': 'maybe' is not one of null, omit"),
        ('[copy]\nuuid = "hex"', "config key 'uuid': 'hex' is not one of binary, string"),
    ],
)
def test_bad_file_values_name_the_config_key(tmp_path: Path, toml: str, message: str) -> None:
    assert usage_error(toml=toml, tmp_path=tmp_path) == message


def test_bad_value_below_a_good_one_is_not_reached(tmp_path: Path) -> None:
    # The flag wins, so the bad file value is never parsed.
    cfg = build(cli={"workers": "4"}, toml='workers = "x"', tmp_path=tmp_path)
    assert cfg.workers == 4


@pytest.mark.parametrize("value", ["2.5", "true"])
def test_file_int_option_refuses_floats_and_booleans(tmp_path: Path, value: str) -> None:
    message = usage_error(toml=f"workers = {value}", tmp_path=tmp_path)
    assert message.startswith("config key 'workers': ")


def test_file_key_as_a_list(tmp_path: Path) -> None:
    try:
        key = build(toml='key = ["a", "b"]', tmp_path=tmp_path).key
    except UsageError as exc:
        assert "config key 'key'" in str(exc)
    else:
        assert key == ("a", "b")


# ----------------------------------------------------------------------------- config files
def test_unknown_config_keys_are_refused(tmp_path: Path) -> None:
    message = usage_error(toml='colour = "red"\nworkers = 2\nzeal = 1', tmp_path=tmp_path)
    assert message.startswith("unsupported config key(s): colour, zeal; supported: ")
    assert "workers" in message and "slot" in message


def test_unknown_key_in_the_copy_table_is_refused(tmp_path: Path) -> None:
    message = usage_error(toml="[copy]\nworker = 2\n", tmp_path=tmp_path)
    assert message.startswith("unsupported config key(s): worker; ")


def test_key_of_another_subcommand_is_accepted_without_effect(tmp_path: Path) -> None:
    # `plan` takes no --slot, --target, --verify or --batch-rows; one file serves every command.
    toml = 'slot = "s"\ntarget = "mongodb://x/"\nverify = "checksum"\nbatch_rows = 5\nworkers = 3\n'
    cfg = build("plan", base={"source": "pg", "table": "t"}, toml=toml, tmp_path=tmp_path)
    assert cfg.command == "plan"
    assert cfg.workers == 3
    assert (cfg.slot, cfg.target, cfg.verify, cfg.batch_rows) == (None, "null:", "count", 10_000)


def test_another_subcommands_bad_file_value_is_not_parsed(tmp_path: Path) -> None:
    cfg = build(
        "plan", base={"source": "pg", "table": "t"}, toml='verify = "never"\n', tmp_path=tmp_path
    )
    assert cfg.verify == "count"


def test_environment_for_another_subcommand_is_ignored() -> None:
    env = {"PARALLELSYNC_SLOT": "s", "SLOTNAME": "s2", "PARALLELSYNC_TARGET": "mongodb://x/"}
    cfg = build("plan", base={"source": "pg", "table": "t"}, env=env)
    assert (cfg.slot, cfg.target) == (None, "null:")


def test_mapping_table_is_accepted(tmp_path: Path) -> None:
    cfg = build(toml='workers = 2\n[mapping]\ninclude = ["id", "name"]\n', tmp_path=tmp_path)
    assert cfg.mapping.include == ("id", "name")


def test_missing_config_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.toml")
    message = usage_error(cli={"config": missing})
    assert message == f"config file {missing} does not exist"


def test_invalid_toml(tmp_path: Path) -> None:
    message = usage_error(toml="workers = = 3\n", tmp_path=tmp_path)
    assert message.startswith(f"config file {tmp_path / 'job.toml'} is not valid TOML: ")


# ------------------------------------------------------------------------ required options
def test_plan_needs_no_target_or_db() -> None:
    cfg = build("plan", base={"source": "pg", "table": "t"})
    assert (cfg.target, cfg.db, cfg.collection) == ("null:", "", "t")


@pytest.mark.parametrize(
    ("missing", "message"),
    [
        ("source", "--source is required (or PARALLELSYNC_SOURCE / config key 'source')"),
        ("table", "--table is required (or PARALLELSYNC_TABLE / config key 'table')"),
        ("target", "--target is required (or PARALLELSYNC_TARGET / config key 'target')"),
    ],
)
def test_copy_requires_source_table_target(missing: str, message: str) -> None:
    base = {k: v for k, v in BASE.items() if k != missing}
    assert usage_error(base=base) == message


@pytest.mark.parametrize("command", ["plan", "verify"])
def test_source_and_table_are_required_for_reading_commands(command: str) -> None:
    assert usage_error(command=command, base={"table": "t", "target": "null:"}) == (
        "--source is required (or PARALLELSYNC_SOURCE / config key 'source')"
    )


def test_verify_requires_a_target() -> None:
    assert usage_error(command="verify", base={"source": "pg", "table": "t"}) == (
        "--target is required (or PARALLELSYNC_TARGET / config key 'target')"
    )


# --------------------------------------------------------------------------- derived values
@pytest.mark.parametrize(
    ("table", "collection"),
    [
        ("orders", "orders"),
        ("sales.orders", "orders"),
        ('"Order Lines"', "Order Lines"),
        ('sales."Order Lines"', "Order Lines"),
        ('"my.schema"."Q""uote"', 'Q"uote'),
        ('"Order Lines.v2"', "Order Lines.v2"),  # the whole quoted name, not "v2"
        ('public."Order Lines.v2"', "Order Lines.v2"),
    ],
)
def test_default_collection_is_the_table_name(table: str, collection: str) -> None:
    assert build(cli={"table": table}).collection == collection


def test_an_empty_collection_given_is_refused_not_replaced_by_the_default() -> None:
    with pytest.raises(UsageError, match="--collection is empty"):
        build(cli={"table": "orders", "collection": ""})


def test_collection_given_wins_over_the_default() -> None:
    assert build(cli={"table": "sales.orders", "collection": "o2"}).collection == "o2"


@pytest.mark.parametrize(
    ("key", "parsed"),
    [("a, b", ("a", "b")), ("id", ("id",)), (" a ,b,, c ", ("a", "b", "c")), (None, None)],
)
def test_key_is_split_on_commas(key: str | None, parsed: tuple[str, ...] | None) -> None:
    assert build(cli={"key": key}).key == parsed


def test_key_from_the_environment() -> None:
    assert build(env={"PARALLELSYNC_KEY": "tenant,no"}).key == ("tenant", "no")


# ------------------------------------------------------------------------------ CLI parser
@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["plan", "--source", "pg", "--table", "t", "--slot", "x"], "--slot x"),
        (["plan", "--source", "pg", "--table", "t", "--target", "x"], "--target x"),
        (["copy", "--source", "pg", "--table", "t", "--worker", "4"], "--worker 4"),
        (["verify", "--resume", "last"], "--resume last"),
        (["status", "--workers", "2"], "--workers 2"),
    ],
)
def test_parser_rejects_options_a_command_does_not_take(argv: list[str], flag: str) -> None:
    with pytest.raises(UsageError) as info:
        build_parser().parse_args(argv)
    assert str(info.value) == f"unrecognized arguments: {flag} (see parallelsync --help)"


def test_status_takes_target_db_job_limit() -> None:
    args = build_parser().parse_args(
        ["status", "--target", "mongodb://h/", "--db", "shop", "--job", "J1", "--limit", "3"]
    )
    assert (args.command, args.target, args.db, args.job, args.limit) == (
        "status",
        "mongodb://h/",
        "shop",
        "J1",
        3,
    )
    assert build_parser().parse_args(["status"]).limit == 10


def test_status_limit_must_be_an_int() -> None:
    with pytest.raises(UsageError, match="argument --limit: invalid int value: 'x'"):
        build_parser().parse_args(["status", "--limit", "x"])


def test_parsed_flags_flow_into_the_config(tmp_path: Path) -> None:
    argv = [
        "copy", "--source", "pg", "--table", '"Order Lines"', "--target", "null:",
        "--workers", "6", "--key", "a, b", "--progress-seconds", "2.5",
        "--config", write_toml(tmp_path, "workers = 3\nnulls = 'omit'\n"),
    ]  # fmt: skip
    cli = vars(build_parser().parse_args(argv))
    assert cli["batch_rows"] is None  # not given: the parser leaves room for env and file
    cfg = build_config(
        "copy", cli, {"PARALLELSYNC_WORKERS": "4", "PARALLELSYNC_RANGES_PER_WORKER": "2"}
    )
    assert (cfg.workers, cfg.key, cfg.progress_seconds, cfg.nulls, cfg.ranges_per_worker) == (
        6,
        ("a", "b"),
        2.5,
        "omit",
        2,
    )
    assert cfg.collection == "Order Lines"
