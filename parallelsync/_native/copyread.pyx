# cython: language_level=3, boundscheck=False, wraparound=False
"""The COPY read loop in C over psycopg's own libpq connection (see copyreader.py).

psycopg's `pgconn.get_copy_data` costs a Python call and a memoryview per CopyData message (one
per tuple). This loop calls libpq directly, without the GIL, appending the messages of a whole
batch into one C buffer. It must call the libpq that psycopg itself loaded (psycopg[binary]
bundles its own; another libpq's functions on that PGconn would be undefined behaviour), so the
function pointers are resolved by the caller from the already-loaded library and passed in.
"""

from cpython.bytearray cimport PyByteArray_FromStringAndSize
from libc.errno cimport EINTR, errno
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    enum: POLLIN

ctypedef int (*get_copy_data_t)(void* conn, char** buffer, int async_) noexcept nogil
ctypedef void (*freemem_t)(void* ptr) noexcept nogil
ctypedef int (*consume_input_t)(void* conn) noexcept nogil
ctypedef int (*socket_t)(void* conn) noexcept nogil


def read_batch(
    size_t conn, tuple functions, int max_messages, Py_ssize_t max_bytes, int timeout_ms=-1
):
    """(bytearray of whole CopyData messages, messages, status): status 0 = limit reached,
    -1 = COPY finished, -2 = error (see PQerrorMessage), -3 = out of memory or poll failed,
    -4 = nothing arrived for timeout_ms (the buffer holds what was read before; -1: no limit)."""
    cdef get_copy_data_t get_copy_data = <get_copy_data_t><size_t>functions[0]
    cdef freemem_t freemem = <freemem_t><size_t>functions[1]
    cdef consume_input_t consume_input = <consume_input_t><size_t>functions[2]
    cdef socket_t pqsocket = <socket_t><size_t>functions[3]
    cdef char* out = NULL
    cdef char* grown
    cdef char* msg
    cdef Py_ssize_t used = 0, cap = 0
    cdef int n, ready, messages = 0, status = 0
    cdef pollfd pfd
    with nogil:
        pfd.fd = pqsocket(<void*>conn)
        pfd.events = POLLIN
        while messages < max_messages and used < max_bytes:
            n = get_copy_data(<void*>conn, &msg, 1)
            if n > 0:
                if used + n > cap:
                    cap = max(2 * cap, used + n, 1 << 16)
                    grown = <char*>realloc(out, cap)
                    if grown == NULL:
                        freemem(msg)
                        status = -3
                        break
                    out = grown
                memcpy(out + used, msg, n)
                used += n
                messages += 1
                freemem(msg)
            elif n == 0:
                ready = poll(&pfd, 1, timeout_ms)
                if ready < 0:
                    if errno == EINTR:
                        continue
                    status = -3
                    break
                if ready == 0:
                    status = -4
                    break
                if consume_input(<void*>conn) == 0:
                    status = -2
                    break
            else:
                status = n
                break
    try:
        return PyByteArray_FromStringAndSize(out, used), messages, status
    finally:
        free(out)
