"""The examples at the end of each subcommand's --help (an epilog printed as written)."""

from __future__ import annotations

# The examples use shell variables, defined on the first line of each example block.
VARIABLES = {
    "PG": "postgresql://sync@pg.example:5432/app",
    "MONGO": "mongodb://mongo.example:27017",
}
SRC = '--source "$PG"'
TGT = '--target "$MONGO"'
WHERE = "--where \"created_at >= '2024-01-01'\""

EXAMPLES: dict[str, tuple[str, ...]] = {
    "copy": (
        f"parallelsync copy {SRC} --table orders {TGT} --db shop --workers 4 --slot orders_sync",
        f"parallelsync copy {SRC} --table sales.orders {WHERE} \\\n"
        f"      {TGT} --db shop --collection orders_2024 --verify checksum --json",
        f"parallelsync copy {SRC} --table orders {TGT} --db shop --workers 4 --resume last",
        f"parallelsync copy {SRC} --table orders {TGT} --db shop --slot orders_sync --follow",
    ),
    "plan": (
        f"parallelsync plan {SRC} --table orders --workers 8",
        f"parallelsync plan {SRC} --table orders --key tenant_id,order_no --json",
    ),
    "verify": (
        f"parallelsync verify {SRC} --table orders {TGT} --db shop",
        f"parallelsync verify {SRC} --table sales.orders {WHERE} \\\n"
        f"      {TGT} --db shop --collection orders_2024 --json",
    ),
    "status": (
        f"parallelsync status {TGT} --db shop",
        f"parallelsync status {TGT} --db shop {SRC} --limit 3     # with each slot's WAL",
        f"parallelsync status {TGT} --db shop --job 20261129T153220_9a37ab",
    ),
    "slot": (
        f"parallelsync slot list {SRC}",
        f"parallelsync slot drop orders_sync {SRC}",
    ),
    "slot list": (f"parallelsync slot list {SRC}", f"parallelsync slot list {SRC} --json"),
    "slot drop": (f"parallelsync slot drop orders_sync {SRC}",),
    "follow": (
        f"parallelsync follow {SRC} --table orders {TGT} --db shop --slot orders_sync",
        f"parallelsync follow {SRC} --table orders {TGT} --db shop --slot orders_sync "
        "--stop-at-end --json",
    ),
    "config": (
        "parallelsync config show --config job.toml",
        "parallelsync config show --for verify --config job.toml --json",
    ),
    "config show": (
        f"parallelsync config show {SRC} --table orders {TGT} --workers 4",
        "PARALLELSYNC_WORKERS=8 parallelsync config show --for plan --config job.toml --json",
    ),
    "demo": (
        "parallelsync demo",
        'eval "$(parallelsync demo --keep --print-env)"    # sets PG and MONGO in this shell',
        "parallelsync demo --stop",
    ),
}

NOTE = (
    "Every option is also an environment variable (PARALLELSYNC_<NAME>) and a key of the\n"
    "--config TOML file; a flag wins over the environment, which wins over the file.\n"
    "`parallelsync config show --for COMMAND ...` prints what a run would use, and from where."
)


def epilog(command: str) -> str:
    examples = EXAMPLES.get(command, ())
    used = [f"{k}={v}" for k, v in VARIABLES.items() if any(f"${k}" in e for e in examples)]
    lines = ["Examples:", *([f"  {'  '.join(used)}"] if used else [])]
    lines += [f"  {line}" for line in examples]
    if not command.startswith(("demo", "config")):
        lines += ["", NOTE]
    return "\n".join(lines)
