#!/usr/bin/env bash
# Lint, type-check and test. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -k snapshot -x
# pytest runs in PARALLELSYNC_TEST_WORKERS worker processes (pytest-xdist; default 2), each with
# its own PostgreSQL cluster and SecantusDB (tests/conftest.py); PARALLELSYNC_TEST_WORKERS=1 runs
# the suite serially in one process.
# All three steps run even when one fails, so one run shows every problem; the exit status is
# non-zero when any of them failed.
set -uo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
if [ ! -f .venv/bin/activate ]; then
    echo "test: no .venv: run 'bash scripts/setup.sh' first" >&2
    exit 1
fi
# shellcheck disable=SC1091
. .venv/bin/activate

failed=()
# The transcoder (and the COPY read loop) are compiled extensions, built in place by setup.sh's
# editable install: rebuild when a Cython source or setup.py is newer than the oldest built
# module, or one is missing (a no-op check otherwise).
kernel=$(ls -t parallelsync/transcode/_kernel.*.so parallelsync/_native/copyread.*.so 2>/dev/null \
    | tail -n 1)
[ "$(ls parallelsync/transcode/_kernel.*.so parallelsync/_native/copyread.*.so 2>/dev/null \
    | wc -l)" -ge 2 ] || kernel=""
if [ -z "$kernel" ] || [ setup.py -nt "$kernel" ] \
    || [ -n "$(find parallelsync \( -name '*.pyx' -o -name '*.pxd' \) -newer "$kernel" | head -n 1)" ]; then
    echo "test: building the compiled transcoder (its sources changed)"
    PARALLELSYNC_BUILD_REQUIRED=1 python setup.py -q build_ext --inplace || failed+=(build)
fi
echo "test: ruff check"
ruff check parallelsync tests benchmarks scripts || failed+=(ruff)
echo "test: mypy"
mypy || failed+=(mypy)
# With an external server (docs/testing.md) the workers would share it, and its cluster-wide
# names (replication slots) and server-wide fail points would meet: serial unless asked.
if [ -n "${PARALLELSYNC_TEST_PG_DSN:-}${PARALLELSYNC_TEST_MONGO_URI:-}" ]; then
    workers=${PARALLELSYNC_TEST_WORKERS:-1}
else
    workers=${PARALLELSYNC_TEST_WORKERS:-2}
fi
if ! [[ "$workers" =~ ^[1-9][0-9]*$ ]]; then
    echo "test: PARALLELSYNC_TEST_WORKERS must be a whole number >= 1, not '$workers'" >&2
    exit 2
fi
parallel=()
# The tests wait on the servers more than they compute, so 2 workers on 2 cores cut the wall
# time nearly in half. --dist load hands out single tests (the slowest take minutes, so whole
# files would leave a worker idle); no fixture is shared beyond one worker's session.
[ "$workers" -gt 1 ] && parallel=(-n "$workers" --dist load)
echo "test: pytest (${workers} worker(s))"
pytest -q --durations=20 "${parallel[@]}" tests "$@" || failed+=(pytest)

if [ "${#failed[@]}" -ne 0 ]; then
    echo "test: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test: all checks passed"
