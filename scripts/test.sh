#!/usr/bin/env bash
# Lint, type-check and test. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh -k snapshot -x
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
echo "test: pytest"
pytest -q --durations=20 tests "$@" || failed+=(pytest)

if [ "${#failed[@]}" -ne 0 ]; then
    echo "test: FAILED: ${failed[*]}" >&2
    exit 1
fi
echo "test: all checks passed"
