"""Which implementation runs: IMPL, PARALLELSYNC_IMPL, and fallbacks that are never silent."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import parallelsync.transcode as transcode
from parallelsync.errors import EncodeError
from parallelsync.transcode import DocumentEncoder, impl
from parallelsync.transcode.model import Codec, FieldNode, Layout
from tests.unit.transcode import copy_helpers as h

REPO = Path(__file__).resolve().parents[2]
# Makes the extension unimportable in a child process, as on a machine without a compiler.
BLOCK = "import sys; sys.modules['parallelsync.transcode._kernel'] = None; "
SHOW = "import parallelsync.transcode as t; print(t.IMPL, t.stats.import_error is not None)"


def child(code: str, impl_env: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != impl.ENV}
    if impl_env is not None:
        env[impl.ENV] = impl_env
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip


def test_the_extension_is_built_and_loaded() -> None:
    """The test environment must run the compiled path (scripts/setup.sh builds it)."""
    assert transcode.IMPL == "c", f"extension not loaded: {transcode.stats.import_error}"
    assert DocumentEncoder(Layout((FieldNode("_id", 0, Codec("int4")),), 1)).impl == "c"


def test_forcing_python() -> None:
    run = child(SHOW + "; from parallelsync.transcode.warmup import warm; warm()", "python")
    assert (run.returncode, run.stdout.split()) == (0, ["python", "False"]), run.stderr
    assert run.stderr == ""  # a forced choice is not a fallback: no warning


def test_missing_extension_falls_back_with_a_warning() -> None:
    run = child(BLOCK + SHOW, None)
    assert (run.returncode, run.stdout.split()) == (0, ["python", "True"]), run.stderr
    assert run.stderr.count("the compiled transcoder is not available") == 1
    assert "pure-Python reference transcoder" in run.stderr


def test_missing_extension_with_impl_c_fails_loudly() -> None:
    run = child(BLOCK + SHOW, "c")
    assert run.returncode == 1 and run.stdout == ""
    assert "ImportError: the compiled transcoder is not available" in run.stderr
    assert "C compiler" in run.stderr


def test_unknown_impl_is_refused() -> None:
    run = child(SHOW, "numba")
    assert run.returncode == 1
    assert "PARALLELSYNC_IMPL must be 'c' or 'python', not 'numba'" in run.stderr


def test_fast_true_without_the_extension_says_how_to_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(impl, "KERNEL", None)
    monkeypatch.setitem(sys.modules, "parallelsync.transcode._kernel", None)
    layout = Layout((FieldNode("_id", 0, Codec("int4")),), 1)
    with pytest.raises(ImportError, match="compiled transcoder is not available"):
        DocumentEncoder(layout, fast=True)


class BrokenKernel:
    """Stands in for a kernel bug: refuses good data, or raises."""

    def __init__(self, err: int | None) -> None:
        self.err = err

    def encode(self, buf: object, start: int = 0) -> tuple[object, ...]:
        if self.err is None:
            raise IndexError("kernel bug")
        return None, None, 0, 0, False, self.err, -1


@pytest.fixture
def fresh_stats(monkeypatch: pytest.MonkeyPatch) -> impl.Stats:
    """Counters and the log-once memory of this test only (this test causes fallbacks)."""
    monkeypatch.setattr(impl.stats, "batches", Counter())
    monkeypatch.setattr(impl.stats, "fallbacks", Counter())
    monkeypatch.setattr(impl, "_logged", set())
    return impl.stats


@pytest.mark.parametrize(("err", "reason"), [(2, "value"), (None, "kernel raised IndexError")])
def test_a_batch_fallback_is_logged_once_and_counted(
    err: int | None, reason: str, fresh_stats: impl.Stats, caplog: pytest.LogCaptureFixture
) -> None:
    layout = Layout((FieldNode("_id", 0, Codec("int4")),), 1)
    encoder = DocumentEncoder(layout, fast=True)
    compiled = encoder._encode.__self__  # type: ignore[attr-defined]
    compiled.kernel = BrokenKernel(err)
    data = h.stream([[h.p_int4(1)], [h.p_int4(2)]], header=False)
    with caplog.at_level(logging.WARNING, logger="parallelsync.transcode"):
        first = encoder.encode(data)
        second = encoder.encode(data)
    assert first.rows == second.rows == 2  # the reference path delivered the batches
    assert first.data == DocumentEncoder(layout, fast=False).encode(data).data
    warnings = [r for r in caplog.records if r.name == "parallelsync.transcode"]
    assert len(warnings) == 1 and reason in warnings[0].getMessage()
    assert "bug in the kernel" in warnings[0].getMessage()
    assert sum(fresh_stats.fallbacks.values()) == 2
    assert (fresh_stats.batches["c"], fresh_stats.batches["python"]) == (0, 3)


def test_bad_data_is_an_error_not_a_fallback(
    fresh_stats: impl.Stats, caplog: pytest.LogCaptureFixture
) -> None:
    layout = Layout((FieldNode("_id", 0, Codec("text")),), 1)
    with pytest.raises(EncodeError, match=r"'_id' \(text\)"):
        DocumentEncoder(layout, fast=True).encode(h.row(b"\xff"))
    assert not fresh_stats.fallbacks and not caplog.records
    assert fresh_stats.batches == Counter()
