"""The result of encoding one buffer of COPY tuples."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

import numpy as np
import numpy.typing as npt


@dataclass
class EncodedBatch:
    data: bytes  # concatenated BSON documents
    offsets: npt.NDArray[np.int64]  # length rows + 1; document i is data[offsets[i]:offsets[i+1]]
    rows: int
    end: int  # buffer position just after the last consumed tuple (or the trailer)
    finished: bool  # the COPY trailer (field count -1) was seen

    def documents(self) -> list[bytes]:
        """Per-document bytes (copies; RawBSONDocument needs bytes anyway)."""
        data = self.data
        bounds = self.offsets.tolist()
        return [data[a:b] for a, b in pairwise(bounds)]
