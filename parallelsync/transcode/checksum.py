"""Order-independent content digests of BSON documents, comparable across both ends.

Each document's exact bytes are hashed (BLAKE2b, 64 bits) and the hashes are added modulo 2**64.
Addition (not XOR) keeps duplicates visible, and the order in which documents arrive does not
matter, so a digest computed while copying equals the one computed by reading the collection back
(MongoDB returns the stored BSON byte for byte).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from hashlib import blake2b

MASK = (1 << 64) - 1


def doc_hash(doc: bytes) -> int:
    return int.from_bytes(blake2b(doc, digest_size=8).digest(), "little")


@dataclass
class Digest:
    count: int = 0
    total: int = 0

    def add_all(self, docs: Iterable[bytes]) -> None:
        n, acc = 0, self.total
        for d in docs:
            acc += int.from_bytes(blake2b(d, digest_size=8).digest(), "little")
            n += 1
        self.total = acc & MASK
        self.count += n

    def merge(self, other: Digest) -> None:
        self.count += other.count
        self.total = (self.total + other.total) & MASK

    def hex(self) -> str:
        return f"{self.total:016x}"

    def as_doc(self) -> dict[str, object]:
        return {"count": self.count, "digest": self.hex()}
