"""How long a call to the target may take (without importing any driver: the config reads these)."""

from __future__ import annotations

# --target-timeout-seconds: how long one ordinary call (a batch insert, a count of one range, the
# rename, a job document write) may take before it fails with a message naming it, instead of
# blocking the run on a server that never answers. Five minutes is far above any such call on a
# healthy server (an insert batch is at most 8 MiB) and still ends a hung one in bounded time.
DEFAULT_CALL_TIMEOUT_S = 300.0
# --long-timeout-seconds: calls whose work grows with the collection (building the target's
# indexes on the temp, reading a whole range back for checksums, counting a collection) get their
# own bound: an index build over a billion documents takes hours, and cutting it off would throw
# the whole copy away, so only a server that never answers should hit this one.
DEFAULT_LONG_TIMEOUT_S = 86_400.0
