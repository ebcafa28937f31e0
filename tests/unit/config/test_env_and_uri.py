"""Unknown PARALLELSYNC_* variables are reported; the database in a MongoDB URI is the default."""

from __future__ import annotations

import pytest

from parallelsync.config import build_config
from parallelsync.config.build import unknown_variables
from parallelsync.targets.uri import uri_database

BASE = {"source": "dbname=x", "table": "t"}


def test_a_mistyped_variable_is_reported_with_the_closest_option() -> None:
    env = {
        "PARALLELSYNC_WORKER": "4",
        "PARALLELSYNC_WORKERS": "2",
        "PARALLELSYNC_BATCH_ROW": "5",
        "PARALLELSYNC_FROBNICATE": "1",
        "PARALLELSYNC_CONFIG": "x.toml",
        "PARALLELSYNC_TEST_PG_DSN": "dbname=y",
        "PARALLELSYNC_IMPL": "c",
        "HOME": "/root",
    }
    assert unknown_variables(env) == [
        "unknown environment variable PARALLELSYNC_BATCH_ROW is ignored "
        "(did you mean PARALLELSYNC_BATCH_ROWS, for --batch-rows?)",
        "unknown environment variable PARALLELSYNC_FROBNICATE is ignored",
        "unknown environment variable PARALLELSYNC_WORKER is ignored "
        "(did you mean PARALLELSYNC_WORKERS, for --workers?)",
    ]
    assert unknown_variables({"PARALLELSYNC_SLOT": "s", "SLOTNAME": "s"}) == []


@pytest.mark.parametrize(
    ("uri", "db"),
    [
        ("mongodb://h/shop", "shop"),
        ("mongodb://h:27017/shop?authSource=admin", "shop"),
        ("mongodb://u:p@h1,h2/shop", "shop"),
        ("mongodb://u:pw/x?y@h/shop", "shop"),  # a raw "/" and "?" in the password
        ("mongodb+srv://u:p@cluster.example.net/my%20db", "my db"),
        ("mongodb://h/", None),
        ("mongodb://h", None),
        ("mongodb://h/?replicaSet=rs", None),
    ],
)
def test_the_database_named_in_a_uri(uri: str, db: str | None) -> None:
    assert uri_database(uri) == db


def test_db_defaults_to_the_uri_database_and_the_flag_wins() -> None:
    cfg = build_config("copy", {**BASE, "target": "mongodb://h/shop"}, env={})
    assert cfg.db == "shop"
    cfg = build_config("copy", {**BASE, "target": "mongodb://h/shop", "db": "other"}, env={})
    assert cfg.db == "other"
    cfg = build_config("copy", {**BASE, "target": "mongodb://h/"}, env={})
    assert cfg.db == ""  # preflight then says --db is required
