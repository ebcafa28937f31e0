"""Which loop reads the COPY stream: the compiled one (`parallelsync/_native`) or psycopg's.

"c" reads a whole batch per call in C over psycopg's own libpq, without the GIL
(`_native/copyread.pyx`); "python" calls psycopg's `get_copy_data` once per tuple. Both give the
same bytes in the same batches. `PARALLELSYNC_COPY_READER=python` forces psycopg's loop,
`PARALLELSYNC_COPY_READER=c` makes an unusable C loop an error instead of a fallback. A fallback
is logged once per process with the reason, never silent; `stats` counts the batches each loop
read, which tests read to prove the compiled loop really ran, and the worker reports the loop of
every range it copied (the job document's `read_loop`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Literal

from parallelsync.errors import UsageError

logger = logging.getLogger("parallelsync.source")

ReadLoop = Literal["c", "python"]
ENV = "PARALLELSYNC_COPY_READER"
# Batches read per loop in this process.
stats: Counter[str] = Counter()
_logged: set[str] = set()


def choose() -> ReadLoop:
    """The loop to read the next COPY with (call after psycopg has connected: the C loop must
    find the libpq psycopg loaded). Raises UsageError for a bad or unsatisfiable setting."""
    from parallelsync._native import copyreader

    wanted = os.environ.get(ENV, "").strip().lower()
    if wanted not in ("", "c", "python"):
        raise UsageError(f"{ENV} must be 'c' or 'python', not {wanted!r}")
    if wanted == "python":
        return "python"
    why = copyreader.available()
    if why is None:
        return "c"
    if wanted == "c":
        raise UsageError(f"{ENV}=c, but the compiled COPY read loop cannot be used: {why}")
    if why not in _logged:
        _logged.add(why)
        logger.warning(
            "the compiled COPY read loop cannot be used (%s): reading with psycopg's "
            "get_copy_data, about 0.7 µs more client CPU per row",
            why,
        )
    return "python"
