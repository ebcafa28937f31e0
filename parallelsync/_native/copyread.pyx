# cython: language_level=3, boundscheck=False, wraparound=False
"""The COPY read loop in C over psycopg's own libpq connection (see copyreader.py).

psycopg's `pgconn.get_copy_data` costs a Python call and a memoryview per CopyData message (one
per tuple). This loop calls libpq directly, without the GIL, appending the messages of a whole
batch straight into the bytearray it returns. It must call the libpq that psycopg itself loaded (psycopg[binary]
bundles its own; another libpq's functions on that PGconn would be undefined behaviour), so the
function pointers are resolved by the caller from the already-loaded library and passed in.
"""

from cpython.bytearray cimport PyByteArray_AS_STRING, PyByteArray_FromStringAndSize
from cpython.object cimport PyObject
from libc.errno cimport EINTR, errno
from libc.string cimport memcpy

cdef extern from "Python.h":
    # The raw form (no exception handling by Cython): the loop calls it with the GIL taken back,
    # and turns a failure into status -3 itself.
    int _resize "PyByteArray_Resize"(PyObject* obj, Py_ssize_t size)
    void PyErr_Clear()

cdef extern from "poll.h" nogil:
    struct pollfd:
        int fd
        short events
        short revents
    int poll(pollfd* fds, unsigned long nfds, int timeout)
    enum: POLLIN

cdef extern from "sys/socket.h" nogil:
    int setsockopt(int fd, int level, int name, const void* value, unsigned int length)
    enum: SOL_SOCKET
    enum: SO_RCVLOWAT

ctypedef int (*get_copy_data_t)(void* conn, char** buffer, int async_) noexcept nogil
ctypedef void (*freemem_t)(void* ptr) noexcept nogil
ctypedef int (*consume_input_t)(void* conn) noexcept nogil
ctypedef int (*socket_t)(void* conn) noexcept nogil

# The batch's bytearray is allocated at once for a little more than the last batch took (a
# process-wide hint: a wrong one only costs a regrowth), grown by doubling when a batch needs
# more, and cut to what was read at the end. Not allocated at max_bytes: a fresh allocation that
# large comes from mmap, and first-touch page faults cost more than the copy it saves.
cdef Py_ssize_t last_used = 0


cdef int _grow(PyObject* ba, Py_ssize_t need, Py_ssize_t* cap, char** out) noexcept with gil:
    cdef Py_ssize_t bigger = max(2 * cap[0], need)
    if _resize(ba, bigger) < 0:
        PyErr_Clear()
        return -1
    cap[0] = bigger
    out[0] = PyByteArray_AS_STRING(<object>ba)
    return 0


cdef inline int _low_water(int fd, int nbytes) noexcept nogil:
    return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &nbytes, sizeof(int))


def read_batch(
    size_t conn, tuple functions, int max_messages, Py_ssize_t max_bytes, int timeout_ms=-1,
    int low_water=0, int low_water_ms=2
):
    """(bytearray of whole CopyData messages, messages, status): status 0 = limit reached,
    -1 = COPY finished, -2 = error (see PQerrorMessage), -3 = out of memory or poll failed,
    -4 = nothing arrived for timeout_ms (the buffer holds what was read before; -1: no limit).

    low_water > 1: while waiting, poll() wakes only once that many bytes are in the socket
    (SO_RCVLOWAT), or after low_water_ms with fewer; then it wakes for any byte for the rest of
    the call. The socket's option is set back to 1 before returning (status -3 if that fails)."""
    cdef get_copy_data_t get_copy_data = <get_copy_data_t><size_t>functions[0]
    cdef freemem_t freemem = <freemem_t><size_t>functions[1]
    cdef consume_input_t consume_input = <consume_input_t><size_t>functions[2]
    cdef socket_t pqsocket = <socket_t><size_t>functions[3]
    global last_used
    cdef Py_ssize_t cap = max(1 << 16, min(max_bytes, last_used + last_used // 8)), used = 0
    # Written straight into the bytearray that is returned; the messages are copied once, from
    # libpq's buffer for the message (PQgetCopyData allocates one per message) into it.
    result = PyByteArray_FromStringAndSize(NULL, cap)
    cdef PyObject* ba = <PyObject*>result  # borrowed: `result` holds the reference
    cdef char* out = PyByteArray_AS_STRING(result)
    cdef char* msg
    cdef int n, ready, messages = 0, status = 0, wait_ms
    cdef bint low = False, drained = False
    cdef pollfd pfd
    with nogil:
        pfd.fd = pqsocket(<void*>conn)
        pfd.events = POLLIN
        low = low_water > 1 and _low_water(pfd.fd, low_water) == 0
        while messages < max_messages and used < max_bytes:
            n = get_copy_data(<void*>conn, &msg, 1)
            if n == 0 and low and not drained:
                # poll() now waits for low_water bytes: first take what the kernel already has
                drained = True
                if consume_input(<void*>conn) == 0:
                    status = -2
                    break
                continue
            if n > 0:
                drained = False
                if used + n > cap and _grow(ba, used + n, &cap, &out) < 0:
                    freemem(msg)
                    status = -3
                    break
                memcpy(out + used, msg, n)
                used += n
                messages += 1
                freemem(msg)
            elif n == 0:
                wait_ms = timeout_ms
                if low and (timeout_ms < 0 or timeout_ms > low_water_ms):
                    wait_ms = low_water_ms
                ready = poll(&pfd, 1, wait_ms)
                if ready < 0:
                    if errno == EINTR:
                        continue
                    status = -3
                    break
                if ready == 0:
                    if low and wait_ms != timeout_ms:
                        # fewer than low_water bytes for low_water_ms (the COPY's end, or a slow
                        # server): wake for any byte again for the rest of this batch
                        low = False
                        if _low_water(pfd.fd, 1) != 0:
                            status = -3
                            break
                        continue
                    status = -4
                    break
                if consume_input(<void*>conn) == 0:
                    status = -2
                    break
            else:
                status = n
                break
        # psycopg waits on this socket with select/poll as well: it must wake for any byte
        if low and _low_water(pfd.fd, 1) != 0 and status >= 0:
            status = -3
    if _resize(ba, used) < 0:  # shrinking: realloc in place
        raise MemoryError()
    if status != -4:  # a full batch or the last one, not a pause
        last_used = max(used, last_used // 2)
    return result, messages, status
