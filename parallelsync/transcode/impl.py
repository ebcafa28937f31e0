"""Which transcoder implementation runs, and how many batches each one encoded.

`IMPL` is "c" when the compiled extension (`_kernel`, built by `pip install`) loads, "python" when
it does not (the pure-Python reference path, ~20x slower). `PARALLELSYNC_IMPL=python` forces the
reference path; `PARALLELSYNC_IMPL=c` makes a missing extension an ImportError instead of a
fallback. A fallback is never silent: at import it is logged once with the reason, and a batch
that the compiled path refused but the reference path encoded (a kernel bug: the kernel refuses
only bad data, which the reference then rejects too) is logged once per reason and counted in
`stats`, which tests read to prove the compiled path really ran.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from types import ModuleType
from typing import Literal

logger = logging.getLogger("parallelsync.transcode")

Impl = Literal["c", "python"]
ENV = "PARALLELSYNC_IMPL"
_MODULE = "parallelsync.transcode._kernel"
_HOW_TO_BUILD = (
    "reinstall parallelsync where a C compiler and the Python headers are available "
    "(bash scripts/setup.sh, or pip install -e . after apt-get install gcc python3-dev)"
)


@dataclass
class Stats:
    """Per-process counters: batches encoded per implementation, and fallbacks with reasons."""

    batches: Counter[str] = field(default_factory=Counter)
    fallbacks: Counter[str] = field(default_factory=Counter)
    import_error: str | None = None  # why the extension did not load (None: it did, or forced)

    def reset(self) -> None:
        self.batches.clear()
        self.fallbacks.clear()


stats = Stats()
_logged: set[str] = set()


def log_once(reason: str, message: str, *args: object) -> None:
    """Log a warning the first time `reason` occurs in this process."""
    if reason not in _logged:
        _logged.add(reason)
        logger.warning(message, *args)


def record_fallback(reason: str) -> None:
    stats.fallbacks[reason] += 1
    log_once(
        "batch:" + reason,
        "the compiled transcoder refused a batch that the reference path encoded (%s): "
        "such batches use the slower Python path; this is a bug in the kernel, please report it",
        reason,
    )


def load_extension() -> ModuleType:
    """The compiled kernel module; ImportError with what to do when it is not built."""
    try:
        return importlib.import_module(_MODULE)
    except ImportError as exc:
        raise ImportError(
            f"the compiled transcoder is not available ({exc}): {_HOW_TO_BUILD}"
        ) from exc


def _choose() -> tuple[Impl, ModuleType | None]:
    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted not in ("", "c", "python"):
        raise ValueError(f"{ENV} must be 'c' or 'python', not {wanted!r}")
    if wanted == "python":
        logger.info("%s=python: using the pure-Python reference transcoder", ENV)
        return "python", None
    if wanted == "c":
        return "c", load_extension()  # fails loudly: the user asked for it
    try:
        return "c", importlib.import_module(_MODULE)
    except ImportError as exc:
        stats.import_error = str(exc)
        log_once(
            "import",
            "the compiled transcoder is not available (%s): using the pure-Python reference "
            "transcoder, about 20 times slower; to fix it, %s",
            exc,
            _HOW_TO_BUILD,
        )
        return "python", None


IMPL, KERNEL = _choose()
