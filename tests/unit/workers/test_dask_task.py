"""The Dask task's pieces that need no cluster: the version check and the sealed setup."""

from __future__ import annotations

import subprocess
import sys

import pytest

from parallelsync import __version__
from parallelsync.errors import ExecutorMismatch
from parallelsync.targets.base import SinkSpec
from parallelsync.transcode import impl
from parallelsync.transcode.model import Layout
from parallelsync.workers.dask_task import Sealed, mismatch, versions
from parallelsync.workers.worker import WorkerSetup

SECRET_DSN = "postgresql://app:s3cr3t-pw@db/shop"
SETUP = WorkerSetup(
    "job1", SECRET_DSN, "snap", Layout((), 0),
    SinkSpec("mongodb", "mongodb://app:m0ng0-pw@m/", "shop", "tmp"), 10, 1024,
)  # fmt: skip


def test_versions_are_the_package_and_the_transcoder() -> None:
    assert versions() == (__version__, impl.IMPL)


def test_equal_versions_pass() -> None:
    assert mismatch(("0.1.0", "c"), ("0.1.0", "c"), "Dask worker tcp://b:1") is None


def test_another_transcoder_is_named_with_what_to_do() -> None:
    assert mismatch(("0.1.0", "c"), ("0.1.0", "python"), "Dask worker tcp://b:1") == (
        "Dask worker tcp://b:1 runs parallelsync 0.1.0 with the 'python' transcoder, the "
        "coordinator parallelsync 0.1.0 with 'c': install the same version on every host "
        "(pip install 'parallelsync[dask]==VERSION'; the transcoder is built at install)"
    )


def test_the_sealed_setup_shows_no_connection_string() -> None:
    """Dask may print a task's arguments (a failed task, the dashboard): they hold DSN and URI."""
    shown = repr(Sealed(SETUP)) + str(Sealed(SETUP))
    assert shown == "<parallelsync setup of job job1>" * 2
    assert "s3cr3t" not in repr((Sealed(SETUP),)) and "m0ng0" not in repr([Sealed(SETUP)])


def test_dask_is_imported_only_for_the_dask_executor() -> None:
    """The optional extra: the command line and the copy job load without it."""
    code = (
        "import sys, parallelsync.cli.main, parallelsync.job.copy, parallelsync.job.verify; "
        "print(sorted(m for m in ('dask', 'distributed') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_missing_extra_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from parallelsync.workers.dask_pool import DaskPool

    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(ExecutorMismatch) as info:
        DaskPool("tcp://a:8786", 2).prestart()
    assert str(info.value).startswith(
        "--executor dask needs the dask and distributed packages: pip install "
        "'parallelsync[dask]' on the coordinator and on every worker host"
    )
    assert info.value.exit_code == 2
