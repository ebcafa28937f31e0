"""Type stub of the compiled kernel (_kernel.pyx)."""

from collections.abc import Callable

import numpy as np
import numpy.typing as npt

ERR_NONE: int
ERR_FRAMING: int
ERR_VALUE: int
ERR_TOO_LARGE: int
ERR_CELL: int
NATIVE_KINDS: dict[str, int]

_Buffer = bytes | bytearray | memoryview
_Encoder = Callable[[_Buffer, int, int], tuple[int, bytes]]

class Kernel:
    def __init__(
        self,
        ops: list[tuple[str, int, bytes, int]],
        slots: list[tuple[int, _Encoder, str]],
        ncolumns: int,
        omit_null: bool,
        infinity: str,
        max_document_size: int,
        check_json_keys: bool,
    ) -> None: ...
    def encode(
        self, buf: _Buffer, start: int = 0
    ) -> tuple[bytes | None, npt.NDArray[np.int64] | None, int, int, bool, int, int]: ...
