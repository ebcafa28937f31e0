"""The Dask task's pieces that need no cluster: the version check and the sealed setup."""

from __future__ import annotations

from parallelsync import __version__
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
