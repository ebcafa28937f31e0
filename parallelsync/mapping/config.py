"""The `[mapping]` table of the config file: which columns become which document fields.

Pure data and validation that needs no database; `mapping.py` checks it against the live table
(missing columns, paths) when it builds the SELECT list and the document layout.

```toml
[mapping]
include = ["id", "name", "street", "city"]  # optional: copy only these (in this order)
exclude = ["password_hash"]                 # never copy these
new_columns = "ignore"                      # with include: columns the list does not mention
id = ["tenant", "order_no"]                 # _id columns (default: --key, then the primary key)
id_format = "document"                      # composite _id: "document" or "string"
id_separator = ":"                          # joins the parts of a string _id
keep_key_fields = false                     # also write the _id columns as ordinary fields
[mapping.fields]                            # rename; dots nest: several columns may share a parent
street = "address.street"
city = "address.city"
[mapping.types]                             # per-column type overrides (see TYPE_OVERRIDES)
price = "double"
```
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from parallelsync.errors import UsageError

# Override name -> the SQL type the SELECT casts the column to ("" = no cast, mode only).
# A small closed set: each one has one obvious BSON result.
TYPE_OVERRIDES: dict[str, str] = {
    "string": "text",  # the column's PostgreSQL text form -> BSON string
    "double": "float8",  # -> BSON double
    "decimal": "numeric",  # -> BSON decimal128 (beyond 34 digits: the --numeric fallback)
    "int32": "int4",  # -> BSON int32 (out-of-range values fail the COPY)
    "int64": "int8",  # -> BSON int64
    "bool": "bool",  # -> BSON boolean
    "date": "timestamptz",  # -> BSON date (UTC ms)
    "json": "jsonb",  # text holding JSON -> embedded document / array
    "binary": "bytea",  # -> BSON binary subtype 0
    "uuid": "uuid",  # -> BSON binary subtype 4 (also from text holding a UUID)
    "uuid_string": "uuid",  # -> the canonical 36-character string
}

MAPPING_KEYS = (
    "include",
    "exclude",
    "fields",
    "id",
    "id_format",
    "id_separator",
    "types",
    "keep_key_fields",
    "new_columns",
)
ID_FORMATS = ("document", "string")
NEW_COLUMN_POLICIES = ("copy", "ignore", "error")


@dataclass(frozen=True)
class MappingConfig:
    include: tuple[str, ...] | None = None  # None: every column not excluded
    exclude: tuple[str, ...] = ()
    fields: tuple[tuple[str, str], ...] = ()  # (column, dotted target path)
    id: tuple[str, ...] | None = None  # None: the range key (--key or primary key)
    id_format: str = "document"
    id_separator: str = ":"
    types: tuple[tuple[str, str], ...] = ()  # (column, override name)
    keep_key_fields: bool = False
    new_columns: str = "ignore"

    @property
    def is_default(self) -> bool:
        return self == MappingConfig()

    def field_map(self) -> dict[str, str]:
        return dict(self.fields)

    def type_map(self) -> dict[str, str]:
        return dict(self.types)

    def mentioned(self) -> set[str]:
        """Every column the mapping names anywhere (for the new_columns policy and drift checks)."""
        names = set(self.include or ()) | set(self.exclude) | set(self.id or ())
        return names | {c for c, _ in self.fields} | {c for c, _ in self.types}


def _names(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise UsageError(f"{where} must be a column name or a list of column names, got {value!r}")
    if len(set(value)) != len(value):
        dup = sorted({v for v in value if value.count(v) > 1})
        raise UsageError(f"{where} names {', '.join(dup)} more than once")
    return tuple(value)


def _table(value: Any, where: str) -> dict[str, str]:
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise UsageError(f'{where} must be a table of column = "string" entries, got {value!r}')
    return dict(value)


def check_path(path: str, where: str) -> tuple[str, ...]:
    """Split a dotted target path; each part must be a usable MongoDB field name."""
    parts = tuple(path.split("."))
    for part in parts:
        if not part:
            raise UsageError(f"{where}: target path {path!r} has an empty part")
        if part.startswith("$"):
            raise UsageError(f"{where}: target path {path!r} has a part starting with '$'")
        if "\x00" in part:
            raise UsageError(f"{where}: target path {path!r} contains a NUL character")
    if parts[0] == "_id":
        raise UsageError(
            f"{where}: target path {path!r} would overwrite _id; choose _id with mapping.id"
        )
    return parts


def parse_mapping(raw: Any, origin: str = "config table [mapping]") -> MappingConfig:
    """Validate the `[mapping]` table of a config file (everything that needs no database)."""
    if raw is None:
        return MappingConfig()
    if not isinstance(raw, Mapping):
        raise UsageError(f"{origin} must be a table, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(MAPPING_KEYS))
    if unknown:
        raise UsageError(
            f"unsupported key(s) in {origin}: {', '.join(unknown)}; "
            f"supported: {', '.join(MAPPING_KEYS)}"
        )
    include = _names(raw["include"], "mapping.include") if "include" in raw else None
    exclude = _names(raw.get("exclude", []), "mapping.exclude")
    both = sorted(set(include or ()) & set(exclude))
    if both:
        raise UsageError(f"mapping.include and mapping.exclude both name {', '.join(both)}")
    fields = _table(raw.get("fields", {}), "mapping.fields")
    for col, path in fields.items():
        check_path(path, f"mapping.fields.{col}")
        if col in exclude:
            raise UsageError(
                f"mapping.fields renames column {col!r}, which mapping.exclude excludes"
            )
    types = _table(raw.get("types", {}), "mapping.types")
    for col, name in types.items():
        if name not in TYPE_OVERRIDES:
            raise UsageError(
                f"mapping.types.{col}: {name!r} is not a supported type; "
                f"supported: {', '.join(TYPE_OVERRIDES)}"
            )
        if col in exclude:
            raise UsageError(
                f"mapping.types sets a type for column {col!r}, which mapping.exclude excludes"
            )
    ident = _names(raw["id"], "mapping.id") if "id" in raw else None
    id_format = raw.get("id_format", "document")
    if id_format not in ID_FORMATS:
        raise UsageError(f"mapping.id_format: {id_format!r} is not one of {', '.join(ID_FORMATS)}")
    sep = raw.get("id_separator", ":")
    if not isinstance(sep, str):
        raise UsageError(f"mapping.id_separator must be a string, got {sep!r}")
    if "id_separator" in raw and id_format != "string":
        raise UsageError('mapping.id_separator only applies with id_format = "string"')
    keep = raw.get("keep_key_fields", False)
    if not isinstance(keep, bool):
        raise UsageError(f"mapping.keep_key_fields must be true or false, got {keep!r}")
    policy = raw.get("new_columns", "ignore")
    if policy not in NEW_COLUMN_POLICIES:
        raise UsageError(
            f"mapping.new_columns: {policy!r} is not one of {', '.join(NEW_COLUMN_POLICIES)}"
        )
    if "new_columns" in raw and include is None:
        raise UsageError(
            "mapping.new_columns only applies with mapping.include (without an include list "
            "every column that is not excluded is copied)"
        )
    return MappingConfig(
        include=include,
        exclude=exclude,
        fields=tuple(fields.items()),
        id=ident,
        id_format=id_format,
        id_separator=sep,
        types=tuple(types.items()),
        keep_key_fields=keep,
        new_columns=policy,
    )


__all__ = ["TYPE_OVERRIDES", "MappingConfig", "check_path", "parse_mapping"]
