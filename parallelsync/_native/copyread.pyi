"""Type stub of the compiled COPY read loop (copyread.pyx)."""

def read_batch(
    conn: int,
    functions: tuple[int, int, int, int],
    max_messages: int,
    max_bytes: int,
    timeout_ms: int = -1,
    low_water: int = 0,
    low_water_ms: int = 2,
) -> tuple[bytearray, int, int]: ...
