"""Type stub of the compiled COPY read loop (copyread.pyx)."""

def read_batch(
    conn: int,
    functions: tuple[int, int, int, int],
    max_messages: int,
    max_bytes: int,
    timeout_ms: int = -1,
) -> tuple[bytearray, int, int]: ...
