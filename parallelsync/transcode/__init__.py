"""Pure, I/O-free transcoding of binary COPY tuples into BSON documents."""

from parallelsync.transcode.batch import EncodedBatch
from parallelsync.transcode.encoder import DocumentEncoder, header_length

__all__ = ["DocumentEncoder", "EncodedBatch", "header_length"]
