"""Pure, I/O-free transcoding of binary COPY tuples into BSON documents.

`IMPL` is the implementation in use ("c": the compiled extension, "python": the reference path);
`stats` counts the batches each one encoded in this process (see impl.py).
"""

from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.encoder import DocumentEncoder, header_length
from parallelsync.transcode.impl import IMPL, stats

__all__ = ["IMPL", "DocumentEncoder", "EncodedBatch", "header_length", "stats"]
