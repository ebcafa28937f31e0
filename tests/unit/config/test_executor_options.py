"""--executor and --scheduler: defaults, flag and environment, combinations refused."""

from __future__ import annotations

import pytest

from parallelsync.config import build_config, build_copy_config
from parallelsync.errors import UsageError

BASE = {"source": "postgresql://x/db", "table": "t", "target": "null:"}


def test_the_local_pool_is_the_default() -> None:
    cfg = build_copy_config(BASE, env={})
    assert cfg.executor == "local" and cfg.scheduler is None


def test_dask_with_a_scheduler_from_flag_and_environment() -> None:
    cfg = build_copy_config(
        {**BASE, "executor": "dask"}, env={"PARALLELSYNC_SCHEDULER": "tcp://a:8786"}
    )
    assert cfg.executor == "dask" and cfg.scheduler == "tcp://a:8786"


def test_dask_without_a_scheduler_means_a_local_cluster() -> None:
    cfg = build_copy_config({**BASE, "executor": "dask"}, env={})
    assert cfg.executor == "dask" and cfg.scheduler is None


def test_a_scheduler_without_the_dask_executor_is_refused() -> None:
    with pytest.raises(UsageError, match="--scheduler is for --executor dask"):
        build_copy_config({**BASE, "scheduler": "tcp://a:8786"}, env={})


def test_an_unknown_executor_is_refused() -> None:
    with pytest.raises(UsageError, match="PARALLELSYNC_EXECUTOR: 'ray' is not one of local, dask"):
        build_copy_config(BASE, env={"PARALLELSYNC_EXECUTOR": "ray"})


def test_a_remote_cluster_cannot_write_a_file_target() -> None:
    with pytest.raises(UsageError, match="each worker host would write its own files"):
        build_copy_config(
            {**BASE, "target": "file:/tmp/x", "executor": "dask", "scheduler": "tcp://a:8786"},
            env={},
        )


def test_verify_has_no_executor() -> None:
    cfg = build_config("verify", BASE, env={"PARALLELSYNC_EXECUTOR": "dask"})
    assert cfg.executor == "local"
