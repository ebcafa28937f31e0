"""Read a COPY stream in whole batches with one C call each, on psycopg's own connection.

psycopg's `pgconn.get_copy_data` costs a Python call and a memoryview per CopyData message, and
binary COPY sends one message per tuple: ~0.4 µs of client CPU per row that the C loop in
copyread.pyx does not spend (benchmarks/bench_impl.py, "read" vs "read_c"). The loop releases
the GIL, waits on the socket with poll() (woken by 64 KiB, not by every 8 KiB the server sends),
and appends the messages of a batch straight into the bytearray it returns.

It must call the libpq that psycopg itself loaded: psycopg[binary] bundles its own copy, and
functions of another libpq on that PGconn would be undefined behaviour. The functions are
therefore looked up in the library already mapped into this process (dlopen with RTLD_NOLOAD
never loads a second one), and only when exactly one libpq is mapped; otherwise `available()`
says why and the caller keeps psycopg's Python loop.
"""

from __future__ import annotations

import ctypes
import os
from functools import cache
from typing import Any

_FUNCTIONS = ("PQgetCopyData", "PQfreemem", "PQconsumeInput", "PQsocket")

# read_batch status codes
BATCH_FULL = 0  # max_messages or max_bytes reached: call again
COPY_DONE = -1  # the COPY finished: collect its result with get_result()
COPY_FAILED = -2  # libpq reported an error (pgconn.get_error_message())
READ_FAILED = -3  # out of memory, or poll() failed
WAITING = -4  # nothing arrived for timeout_ms: the buffer holds the messages read before


# While a batch is read, poll() wakes only once this many bytes are waiting (SO_RCVLOWAT), or
# after LOW_WATER_MS with fewer: PostgreSQL sends 8 KiB at a time, and waking for each send
# cost ~0.1 µs of client CPU per row in poll() and context switches (bench_mixed); 256 KiB was
# no better. The option is set back to 1 before the call returns: psycopg waits on this socket.
LOW_WATER = 64 * 1024
LOW_WATER_MS = 2


def _mapped_libpq() -> list[str]:
    try:
        with open("/proc/self/maps") as maps:
            return sorted({line.split()[-1] for line in maps if "/libpq" in line})
    except OSError:
        return []


@cache
def functions() -> tuple[int, int, int, int] | str:
    """Addresses of the four libpq functions psycopg's libpq exports, or why they are not
    usable. Call after psycopg has connected (its libpq is loaded by then)."""
    import psycopg  # noqa: F401  (loads the libpq psycopg uses)

    paths = _mapped_libpq()
    if len(paths) != 1:
        return f"expected exactly one libpq mapped in this process, found {paths or 'none'}"
    try:
        lib = ctypes.CDLL(paths[0], mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        addresses = tuple(ctypes.cast(getattr(lib, n), ctypes.c_void_p).value for n in _FUNCTIONS)
    except (OSError, AttributeError) as exc:
        return f"cannot resolve libpq functions in {paths[0]}: {exc}"
    if not all(addresses):
        return f"a libpq function resolved to NULL in {paths[0]}"
    return addresses  # type: ignore[return-value]


def available() -> str | None:
    """None when the C read loop can be used, else the reason it cannot."""
    try:
        from parallelsync._native import copyread  # noqa: F401
    except ImportError as exc:
        return f"the compiled read loop is not built: {exc}"
    fns = functions()
    return fns if isinstance(fns, str) else None


def read_batch(
    pgconn: Any, max_messages: int, max_bytes: int, timeout_ms: int = -1
) -> tuple[bytearray, int, int]:
    """(buffer of whole CopyData messages, messages, status) from a PGconn in COPY_OUT state.

    Stops after max_messages messages, once the buffer holds max_bytes, or when nothing arrived
    for timeout_ms (-1: waits for ever); the caller must have checked `available()` and must
    not let the connection be closed during the call (the loop holds its raw pointer)."""
    from parallelsync._native import copyread

    fns = functions()
    assert not isinstance(fns, str), fns
    ptr = pgconn.pgconn_ptr
    if not ptr:
        raise ValueError("the connection is closed")
    return copyread.read_batch(
        ptr, fns, max_messages, max_bytes, timeout_ms, LOW_WATER, LOW_WATER_MS
    )
