#!/usr/bin/env bash
# Set up a machine to develop and test parallelsync. Idempotent; safe to re-run.
#   - installs the PostgreSQL server package when no /usr/lib/postgresql/*/bin/initdb exists
#     (Debian/Ubuntu, as root or through sudo); the tests start their own private cluster, so
#     no system-wide PostgreSQL service is started or needed;
#   - creates .venv (python3 -m venv) when missing, then pip install -e '.[test,bench]'.
# Environment: PYTHON (default python3) picks the interpreter for a new .venv.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
log() { printf 'setup: %s\n' "$*"; }

# ---- PostgreSQL server binaries ------------------------------------------------------------
pg_bin_dir() {
    # The newest version dir that has initdb, e.g. /usr/lib/postgresql/15/bin.
    local b best=""
    for b in /usr/lib/postgresql/*/bin; do
        [ -x "$b/initdb" ] && best=$(printf '%s\n%s\n' "$best" "$b" | sort -V | tail -n 1)
    done
    printf '%s' "$best"
}

if [ -n "$(pg_bin_dir)" ]; then
    log "PostgreSQL server binaries found in $(pg_bin_dir)"
else
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=()
    elif command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    else
        log "PostgreSQL server binaries are missing and this is not root: install the" \
            "'postgresql' package, or set PARALLELSYNC_PG_BIN / PARALLELSYNC_TEST_PG_DSN" >&2
        exit 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        log "no apt-get: install the PostgreSQL server (initdb, pg_ctl, postgres) by hand" >&2
        exit 1
    fi
    # A policy-rc.d that says "no" keeps the package's postinst from starting the Debian
    # cluster on 5432; we only need the binaries. Only ours is removed afterwards.
    policy=/usr/sbin/policy-rc.d
    made_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | "${SUDO[@]}" tee "$policy" >/dev/null
        "${SUDO[@]}" chmod 755 "$policy"
        made_policy=1
    fi
    cleanup_policy() { if [ "$made_policy" = 1 ]; then "${SUDO[@]}" rm -f "$policy"; fi; }
    trap cleanup_policy EXIT
    log "installing the PostgreSQL server package (apt-get update && apt-get install postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    "${SUDO[@]}" apt-get update -q
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends postgresql </dev/null
    cleanup_policy
    trap - EXIT
    if [ -z "$(pg_bin_dir)" ]; then
        log "apt-get installed postgresql but no /usr/lib/postgresql/*/bin/initdb exists" >&2
        exit 1
    fi
    log "PostgreSQL server binaries installed in $(pg_bin_dir)"
fi
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    log "running as root but there is no 'postgres' user to run test clusters as" >&2
    exit 1
fi

# ---- Python virtualenv -----------------------------------------------------------------------
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        log "$PYTHON is missing or older than 3.11: set PYTHON to a Python 3.11+ interpreter" >&2
        exit 1
    fi
    log "creating .venv with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
    "$PYTHON" -m venv .venv
else
    log ".venv exists ($(.venv/bin/python -c 'import sys; print(sys.version.split()[0])'))"
fi

log "installing parallelsync in editable mode with test and bench extras"
.venv/bin/python -m pip install -q -e '.[test,bench]' </dev/null
# Compile the numba kernels once into numba's on-disk cache (~40 s of CPU when cold, about a
# second to load afterwards), so the first copy and every worker process start fast.
log "compiling the transcoder's numba kernels (cached; quick when already done)"
.venv/bin/python -m parallelsync.transcode.warmup </dev/null
log "done: run 'bash scripts/test.sh' (or '. .venv/bin/activate && pytest -q tests')"
