#!/usr/bin/env bash
# Set up a machine to develop and test parallelsync. Idempotent; safe to re-run.
#   - installs the PostgreSQL server package when no /usr/lib/postgresql/*/bin/initdb exists
#     (Debian/Ubuntu, as root or through sudo); the tests start their own private cluster, so
#     no system-wide PostgreSQL service is started or needed;
#   - installs a C compiler (gcc) and the Python headers (python3-dev) when missing: the
#     transcoder is a Cython extension compiled by the install;
#   - creates .venv (python3 -m venv) when missing, then pip install -e '.[test,bench]', which
#     builds the extension in place, and checks that it loads.
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

# Root or sudo for apt-get; `can_root` says whether we have either.
if [ "$(id -u)" -eq 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    SUDO=(false)
fi
can_root() { [ "${SUDO[0]:-}" != false ] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
apt_update_once() {
    if [ "$apt_updated" = 0 ]; then
        "${SUDO[@]}" apt-get update -q
        apt_updated=1
    fi
}
apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    apt_update_once
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "$@" </dev/null
}

if [ -n "$(pg_bin_dir)" ]; then
    log "PostgreSQL server binaries found in $(pg_bin_dir)"
else
    if ! can_root; then
        log "PostgreSQL server binaries are missing and there is no root/sudo with apt-get:" \
            "install the 'postgresql' package, or set PARALLELSYNC_PG_BIN /" \
            "PARALLELSYNC_TEST_PG_DSN" >&2
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
    apt_install postgresql
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

# ---- C compiler and Python headers (the transcoder's Cython extension) -----------------------
PYTHON=${PYTHON:-python3}
# The interpreter whose headers the build needs: the existing venv's, or the one making it.
if [ -x .venv/bin/python ]; then build_py=.venv/bin/python; else build_py=$PYTHON; fi
python_h() {
    "$build_py" -c 'import os, sysconfig; print(os.path.join(sysconfig.get_paths()["include"], "Python.h"))' \
        2>/dev/null
}
missing=()
if ! command -v cc >/dev/null 2>&1 && ! command -v gcc >/dev/null 2>&1; then
    missing+=(gcc)
fi
if [ ! -f "$(python_h)" ]; then
    # Debian names the headers after the interpreter's version (python3.11-dev); python3-dev is
    # the default interpreter's, which is the right one when that is what runs here.
    version=$("$build_py" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true)
    if can_root; then apt_update_once; fi
    if [ -n "$version" ] && apt-cache show "python${version}-dev" >/dev/null 2>&1; then
        missing+=("python${version}-dev")
    else
        missing+=(python3-dev)
    fi
fi
if [ "${#missing[@]}" -eq 0 ]; then
    log "C compiler and Python headers found ($(python_h))"
else
    if ! can_root; then
        log "missing ${missing[*]} to build the transcoder and no root/sudo with apt-get:" \
            "install a C compiler and the headers of $build_py" >&2
        exit 1
    fi
    log "installing ${missing[*]} (the transcoder is compiled at install)"
    apt_install "${missing[@]}"
    if [ ! -f "$(python_h)" ]; then
        log "Python.h is still missing for $build_py (expected $(python_h)): install the" \
            "development headers of that interpreter" >&2
        exit 1
    fi
fi

# ---- Python virtualenv -----------------------------------------------------------------------
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

log "installing parallelsync in editable mode with test and bench extras (compiles the transcoder)"
PARALLELSYNC_BUILD_REQUIRED=1 .venv/bin/python -m pip install -q -e '.[test,bench]' </dev/null
# Fails unless the compiled extension loads and encodes.
PARALLELSYNC_IMPL=c .venv/bin/python -m parallelsync.transcode.warmup </dev/null
log "done: run 'bash scripts/test.sh' (or '. .venv/bin/activate && pytest -q tests')"
