"""Rows of the change stream into the copy's documents, through the copy's own transcoder.

With `binary 'true'` a pgoutput value is the column type's send format: exactly the bytes COPY
BINARY sends for that column. So a row becomes a COPY tuple (int16 field count, then per SELECT
expression an int32 length and the bytes, -1 for NULL) and goes through the same
`DocumentEncoder` and `Layout` as a range of the copy: a followed document is byte for byte what
a fresh copy writes. This holds for every expression that reads a column as is; expressions
the copy computes in its SELECT (casts of `[mapping.types]`, types cast to text or jsonb, a
string `_id`, ctid) have no value in the stream, and `check_followable` refuses them.

Unchanged TOASTed values (`u`) are not in the stream: such a column is left out of the update
(`$set` of the received fields), never written as NULL.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator, Sequence

from bson.raw_bson import RawBSONDocument

from parallelsync.cdc.decode import BINARY, NULL, TEXT, UNCHANGED, Value
from parallelsync.errors import EncodeError, UsageError
from parallelsync.mapping.projection import Projection
from parallelsync.transcode.bson_writer import cstring, frame_document, pack_i32
from parallelsync.transcode.encoder import DocumentEncoder
from parallelsync.transcode.model import DocNode, FieldNode, Layout, Node

_I16 = struct.Struct("!h").pack
_I32 = struct.Struct("!i").pack
_NULL_FIELD = _I32(-1)
_LE_I32 = struct.Struct("<i").unpack_from

# The fixed payload sizes of BSON element types (bsonspec.org); the others carry a length.
_FIXED = {0x01: 8, 0x06: 0, 0x07: 12, 0x08: 1, 0x09: 8, 0x0A: 0, 0x10: 4, 0x11: 8, 0x12: 8,
          0x13: 16, 0x7F: 0, 0xFF: 0}  # fmt: skip


def check_followable(proj: Projection) -> None:
    """Every SELECT expression must read a column as is (see the module docstring)."""
    computed = [i for i, c in enumerate(proj.sources) if c is None]
    if computed:
        raise UsageError(
            "follow cannot build this document's _id from the change stream (a string _id "
            '[mapping] id_format = "string", or a ctid _id for a table without a key): '
            "copy with the key's own values as _id to follow the table"
        )
    cast = sorted({c.name for c in proj.sources if c is not None and c.cast is not None})
    if cast:
        raise UsageError(
            f"follow cannot encode column(s) {', '.join(cast)}: the copy casts them in its SELECT "
            "([mapping.types], or a type without a binary form), and the change stream carries "
            "only the column's own value; remove their type overrides or exclude them"
        )


def elements(doc: bytes, start: int = 4) -> Iterator[tuple[str, int, int]]:
    """(key, element start, element end) of each element of a BSON document (or sub-document
    starting at `start - 4`); an element's bytes are its type, key and value."""
    end = start - 4 + _LE_I32(doc, start - 4)[0] - 1
    pos = start
    while pos < end:
        btype = doc[pos]
        key_end = doc.index(b"\x00", pos + 1)
        key = doc[pos + 1 : key_end].decode()
        value = key_end + 1
        if btype in _FIXED:
            size = _FIXED[btype]
        elif btype in (0x02, 0x0D, 0x0E):
            size = 4 + _LE_I32(doc, value)[0]
        elif btype in (0x03, 0x04, 0x0F):
            size = _LE_I32(doc, value)[0]
        elif btype == 0x05:
            size = 5 + _LE_I32(doc, value)[0]
        elif btype == 0x0B:  # regex: two cstrings
            size = doc.index(b"\x00", doc.index(b"\x00", value) + 1) + 1 - value
        elif btype == 0x0C:
            size = 4 + _LE_I32(doc, value)[0] + 12
        else:
            raise EncodeError(f"unknown BSON element type {btype:#04x} in a document")
        yield key, pos, value + size
        pos = value + size


def _columns(node: Node) -> Iterator[int]:
    if isinstance(node, FieldNode):
        yield node.column
    else:
        for child in node.children:
            yield from _columns(child)


def _renamed(doc: bytes, start: int, end: int, key: str, path: str) -> bytes:
    """The element at doc[start:end], keyed `path` instead of `key`."""
    return doc[start : start + 1] + cstring(path) + doc[start + 2 + len(key.encode()) : end]


class RowEncoder:
    """Encodes stream rows with the copy's layout; `columns` are the relation's column names in
    the stream's order (the table's columns, as the Relation message lists them)."""

    def __init__(self, proj: Projection, columns: Sequence[str]) -> None:
        check_followable(proj)
        self.names = [c.name for c in proj.sources if c is not None]
        self.key_names = list(proj.key)
        self.remap(columns)
        self.layout = proj.layout
        self._docs = DocumentEncoder(proj.layout)
        id_layout = Layout((proj.layout.nodes[0],), proj.layout.ncolumns, proj.layout.options)
        self._ids = DocumentEncoder(id_layout)
        # `{_id: {key column: value, ...}}`: a changed-row job's key, with the codecs of the
        # documents' own key fields (cdc/changed_rows.py writes the copy's the same way).
        self._keys = None if proj.key_layout is None else DocumentEncoder(proj.key_layout)

    def remap(self, columns: Sequence[str]) -> None:
        """The stream's rows now have these columns, in this order (a Relation message)."""
        index = {name: i for i, name in enumerate(columns)}
        missing = [n for n in self.names if n not in index]
        if missing:
            raise UsageError(f"the change stream has no column(s) {', '.join(missing)}")
        self._src = [index[n] for n in self.names]
        self._key_src = [index[n] for n in self.key_names if n in index]

    def copy_tuple(self, row: Sequence[Value], src: Sequence[int] | None = None) -> bytes:
        names = self.names if src is None else self.key_names
        src = self._src if src is None else src
        parts = [_I16(len(src))]
        for expr, at in enumerate(src):
            value = row[at]
            if value.kind == BINARY:
                parts += (_I32(len(value.data)), value.data)
            elif value.kind in (NULL, UNCHANGED):
                parts.append(_NULL_FIELD)
            elif value.kind == TEXT:
                raise EncodeError(
                    f"column {names[expr]!r} arrived in text form: its type has no binary "
                    "send function, so follow cannot encode it as the copy does; exclude it"
                )
        return b"".join(parts)

    def _encode(self, encoder: DocumentEncoder, rows: Sequence[Sequence[Value]]) -> list[bytes]:
        if not rows:
            return []
        buf = b"".join(self.copy_tuple(r) for r in rows)
        batch = encoder.encode(buf, 0)
        return batch.documents()

    def documents(self, rows: Sequence[Sequence[Value]]) -> list[bytes]:
        """The documents a copy would write for these rows (unchanged values as NULL)."""
        return self._encode(self._docs, rows)

    def keys(self, rows: Sequence[Sequence[Value]]) -> list[RawBSONDocument]:
        """`{key column: value, ...}` of each row, typed as the documents' key fields."""
        if self._keys is None or not rows:
            return []
        if len(self._key_src) != len(self.key_names):
            raise UsageError(f"the change stream has no key column(s) {', '.join(self.key_names)}")
        buf = b"".join(self.copy_tuple(r, self._key_src) for r in rows)
        return [RawBSONDocument(d)["_id"] for d in self._keys.encode(buf, 0).documents()]

    def ids(self, rows: Sequence[Sequence[Value]]) -> list[bytes]:
        """`{_id: ...}` of each row, from its key columns alone (a Delete's old key)."""
        return self._encode(self._ids, rows)

    def unchanged(self, row: Sequence[Value]) -> frozenset[int]:
        """The SELECT expressions whose column was not sent (unchanged TOAST)."""
        return frozenset(e for e, s in enumerate(self._src) if row[s].kind == UNCHANGED)

    def partial_update(self, doc: bytes, unchanged: frozenset[int]) -> RawBSONDocument:
        """`{$set: received fields[, $unset: omitted NULLs]}`: the update for a row with
        unchanged TOASTed columns, from its document encoded with those as NULL."""
        sets, unsets = bytearray(), bytearray()
        self._set_fields(self.layout.nodes[1:], doc, 4, unchanged, "", sets, unsets)
        update = b"\x03$set\x00" + frame_document(sets)
        if unsets:
            update += b"\x03$unset\x00" + frame_document(unsets)
        return RawBSONDocument(frame_document(update))

    def _set_fields(
        self,
        nodes: Sequence[Node],
        doc: bytes,
        start: int,
        unchanged: frozenset[int],
        prefix: str,
        sets: bytearray,
        unsets: bytearray,
    ) -> None:
        have = {key: (a, b) for key, a, b in elements(doc, start)}
        for node in nodes:
            path = prefix + node.key
            cols = set(_columns(node))
            if cols <= unchanged:
                continue
            found = have.get(node.key)
            if isinstance(node, DocNode) and cols & unchanged:
                assert found is not None  # an embedded document is always written
                self._set_fields(
                    node.children, doc, found[0] + 2 + len(node.key.encode()) + 4,
                    unchanged, path + ".", sets, unsets,
                )  # fmt: skip
            elif found is None:  # a NULL left out by nulls = "omit": the field goes
                unsets += b"\x10" + cstring(path) + pack_i32(1)
            else:
                sets += _renamed(doc, found[0], found[1], node.key, path)

    def merge(self, new: bytes, old: bytes, unchanged: frozenset[int]) -> bytes:
        """The new row's document with the unchanged columns' fields taken from the old one (a
        key change of a row with unchanged TOASTed values: the new `_id` needs a whole document)."""
        return frame_document(self._merge(self.layout.nodes, new, 4, old, 4, unchanged))

    def _merge(
        self,
        nodes: Sequence[Node],
        new: bytes,
        new_at: int,
        old: bytes,
        old_at: int,
        unchanged: frozenset[int],
    ) -> bytes:
        mine = {k: (a, b) for k, a, b in elements(new, new_at)}
        theirs = {k: (a, b) for k, a, b in elements(old, old_at)}
        out = bytearray()
        for node in nodes:
            cols = set(_columns(node))
            src, where = (old, theirs) if cols <= unchanged else (new, mine)
            if isinstance(node, DocNode) and cols & unchanged and not cols <= unchanged:
                skip = 2 + len(node.key.encode()) + 4
                a, b = mine[node.key][0] + skip, theirs[node.key][0] + skip
                inner = self._merge(node.children, new, a, old, b, unchanged)
                out += b"\x03" + cstring(node.key) + frame_document(inner)
                continue
            if node.key in where:
                a, b = where[node.key]
                out += src[a:b]
        return bytes(out)
