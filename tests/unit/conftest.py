"""Unit-test fixtures: no test may hide a compiled-kernel fallback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from parallelsync.transcode import stats


@pytest.fixture(autouse=True)
def no_kernel_fallbacks() -> Iterator[None]:
    """Fails a test in which the compiled kernel refused a batch that the reference encoded
    (the batch is still right, so only this counter shows the kernel bug)."""
    before = sum(stats.fallbacks.values())
    yield
    assert sum(stats.fallbacks.values()) == before, f"kernel fallbacks: {dict(stats.fallbacks)}"
