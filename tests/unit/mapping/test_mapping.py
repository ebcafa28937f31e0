"""The `[mapping]` config: parsing, and its check against a table (no database needed)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from parallelsync.config import CopyConfig, build_copy_config
from parallelsync.errors import SourceError, UsageError
from parallelsync.mapping.config import MAPPING_KEYS, MappingConfig, parse_mapping
from parallelsync.mapping.projection import Projection, build_projection
from parallelsync.source.catalog import Column, TableInfo
from parallelsync.transcode.model import Codec, DocNode, FieldNode, Node

BASE = {"source": "dbname=x", "table": "t", "target": "null:", "db": "d"}


def col(attnum: int, name: str, codec: str, oid: int = 25, cast: str | None = None) -> Column:
    return Column(name, attnum, oid, codec, False, Codec(codec), cast)


TABLE = TableInfo(
    oid=1,
    schema="public",
    name="people",
    relkind="r",
    columns=(
        col(1, "id", "int8", 20),
        col(2, "name", "text"),
        col(3, "street", "text"),
        col(4, "city", "text"),
        col(5, "secret", "text"),
        col(6, "price", "numeric", 1700),
        col(7, "u", "uuid", 2950),
    ),
    primary_key=("id",),
    relpages=1,
    reltuples=10,
)
COMPOSITE = dataclasses.replace(
    TABLE,
    columns=(col(1, "tenant", "int4", 23), col(2, "no", "text"), col(3, "v", "text")),
    primary_key=("tenant", "no"),
)


def cfg(mapping: dict[str, Any] | None = None, **opts: Any) -> CopyConfig:
    base = build_copy_config({**BASE, **opts}, env={})
    return dataclasses.replace(base, mapping=parse_mapping(mapping))


def project(
    mapping: dict[str, Any] | None = None, table: TableInfo = TABLE, **o: Any
) -> Projection:
    return build_projection(table, cfg(mapping, **o))


def shape(nodes: tuple[Node, ...]) -> list[Any]:
    """Keys of the layout tree: "key" for a value, ("key", [...]) for an embedded document."""
    return [n.key if isinstance(n, FieldNode) else (n.key, shape(n.children)) for n in nodes]


def select(p: Projection) -> str:
    return p.select_list.as_string(None)


# ---------------------------------------------------------------- parsing
def test_default_mapping_copies_every_column_with_the_key_as_id() -> None:
    p = project()
    assert shape(p.layout.nodes) == ["_id", "name", "street", "city", "secret", "price", "u"]
    assert p.key == ("id",)
    assert select(p).startswith('"id", "name"')


def test_unknown_mapping_key_lists_the_supported_keys() -> None:
    with pytest.raises(UsageError, match=r"unsupported key.*colums.*supported: include") as e:
        parse_mapping({"colums": ["a"]})
    for key in MAPPING_KEYS:
        assert key in str(e.value)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"include": ["a"], "exclude": ["a"]}, "both name a"),
        ({"include": ["a", "a"]}, "more than once"),
        ({"include": "a", "new_columns": "sometimes"}, "not one of copy, ignore, error"),
        ({"new_columns": "error"}, "only applies with mapping.include"),
        ({"id_format": "hex"}, "not one of document, string"),
        ({"id_separator": "-"}, 'only applies with id_format = "string"'),
        ({"types": {"a": "float"}}, "not a supported type; supported: string"),
        ({"fields": {"a": "x..y"}}, "empty part"),
        ({"fields": {"a": "$x"}}, "starting with '\\$'"),
        ({"fields": {"a": "_id.x"}}, "would overwrite _id"),
        ({"fields": {"a": 3}}, "must be a table"),
        ({"exclude": ["a"], "fields": {"a": "b"}}, "which mapping.exclude excludes"),
        ({"keep_key_fields": "yes"}, "true or false"),
    ],
)
def test_invalid_mapping_values_are_usage_errors(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_mapping(raw)


def test_mapping_table_is_read_from_the_config_file(tmp_path: Path) -> None:
    path = tmp_path / "job.toml"
    path.write_text(
        'workers = 3\n[mapping]\nexclude = ["secret"]\n[mapping.fields]\ncity = "address.city"\n'
    )
    c = build_copy_config({**BASE, "config": str(path)}, env={})
    assert c.workers == 3
    assert c.mapping == MappingConfig(exclude=("secret",), fields=(("city", "address.city"),))
    path.write_text("[mapping]\nrename = {a = 'b'}\n")
    with pytest.raises(UsageError, match=r"unsupported key.*rename"):
        build_copy_config({**BASE, "config": str(path)}, env={})


def test_oversize_option_defaults_to_fail() -> None:
    assert cfg().oversize == "fail"
    assert cfg(oversize="skip").oversize == "skip"
    with pytest.raises(UsageError, match=r"not one of fail, skip"):
        cfg(oversize="truncate")


# ---------------------------------------------------------------- against the table
def test_rename_nest_and_exclude() -> None:
    p = project(
        {
            "exclude": ["secret"],
            "fields": {"name": "full_name", "street": "address.street", "city": "address.city"},
        }
    )
    assert shape(p.layout.nodes) == [
        "_id",
        "full_name",
        ("address", ["street", "city"]),
        "price",
        "u",
    ]
    address = p.layout.nodes[2]
    assert isinstance(address, DocNode)
    # The leaves still point at the right SELECT columns.
    assert [c.column for c in address.children if isinstance(c, FieldNode)] == [2, 3]


def test_deep_nesting_groups_under_shared_parents() -> None:
    p = project({"fields": {"street": "a.b.street", "city": "a.b.city", "name": "a.name"}})
    # Table order: name (column 2) comes before street and city.
    assert shape(p.layout.nodes)[:2] == ["_id", ("a", ["name", ("b", ["street", "city"])])]


@pytest.mark.parametrize(
    "fields",
    [
        {"street": "address", "city": "address.city"},  # a value and a parent
        {"city": "address.city", "street": "address"},  # same, other order
        {"street": "place", "city": "place"},  # duplicate target
        {"street": "name"},  # onto another column's default name
    ],
)
def test_conflicting_paths_are_errors(fields: dict[str, str]) -> None:
    with pytest.raises(UsageError, match=r"clashes with"):
        project({"fields": fields})


def test_schema_drift_names_the_column_and_the_table() -> None:
    for raw in (
        {"include": ["id", "name", "gone"]},
        {"exclude": ["gone"]},
        {"fields": {"gone": "x"}},
        {"types": {"gone": "string"}},
        {"id": ["gone"]},
    ):
        with pytest.raises(SourceError, match=r"'gone'.*public.people") as e:
            project(raw)
        assert "nothing was copied" in str(e.value)
    with pytest.raises(SourceError, match=r"'nope'.*public.people"):
        project(key="nope")


def test_include_with_new_columns_policies() -> None:
    base = {"include": ["name", "city"]}
    assert shape(project(base).layout.nodes) == ["_id", "name", "city"]
    copy = project({**base, "exclude": ["secret"], "new_columns": "copy"})
    assert shape(copy.layout.nodes) == ["_id", "name", "city", "street", "price", "u"]
    with pytest.raises(SourceError, match=r"street, secret, price, u.*does not list"):
        project({**base, "new_columns": "error"})
    # Every column mentioned (included, excluded or the key): nothing new, no error.
    ok = project({**base, "exclude": ["street", "secret", "price", "u"], "new_columns": "error"})
    assert shape(ok.layout.nodes) == ["_id", "name", "city"]


def test_rename_of_a_column_that_is_not_copied_is_an_error() -> None:
    with pytest.raises(UsageError, match=r"mapping.fields renames column.*street.*does not copy"):
        project({"include": ["name"], "fields": {"street": "s"}})


def test_keep_key_fields_writes_the_key_twice() -> None:
    p = project({"keep_key_fields": True, "include": ["id", "name"]})
    assert shape(p.layout.nodes) == ["_id", "id", "name"]
    assert select(p) == '"id", "id", "name"'


def test_composite_id_document_and_renamed_parts() -> None:
    p = project(table=COMPOSITE)
    assert shape(p.layout.nodes) == [("_id", ["tenant", "no"]), "v"]
    p = project({"fields": {"tenant": "t"}}, table=COMPOSITE)
    assert shape(p.layout.nodes) == [("_id", ["t", "no"]), "v"]
    with pytest.raises(UsageError, match=r"plain name"):
        project({"fields": {"tenant": "a.t"}}, table=COMPOSITE)


def test_string_id_is_computed_in_the_select() -> None:
    p = project({"id_format": "string", "id_separator": "|"}, table=COMPOSITE)
    assert select(p) == 'concat_ws(\'|\', "tenant"::text, "no"::text), "v"'
    first = p.layout.nodes[0]
    assert isinstance(first, FieldNode) and first.codec == Codec("text")
    assert p.key == ("tenant", "no")  # ranges still use the key columns


def test_mapping_id_chooses_id_but_ranges_stay_on_an_indexed_key() -> None:
    p = project({"id": ["u"]})
    assert p.key == ("id",)  # the primary key: indexed, so each range is an index scan
    assert shape(p.layout.nodes) == ["_id", "id", "name", "street", "city", "secret", "price"]
    first = p.layout.nodes[0]
    assert isinstance(first, FieldNode) and first.codec.name == "uuid"
    nokey = dataclasses.replace(TABLE, primary_key=())
    assert project({"id": ["u"]}, table=nokey).key == ()  # plain table: ctid blocks
    view = dataclasses.replace(nokey, relkind="v")
    assert project({"id": ["u"]}, table=view).key == ("u",)  # no ctid: the _id columns


def test_type_overrides_cast_in_the_select() -> None:
    p = project(
        {
            "include": ["price", "name", "u"],
            "types": {"price": "double", "name": "json", "u": "uuid_string"},
        }
    )
    assert select(p) == '"id", "price"::float8, "name"::jsonb, "u"'
    codecs = [n.codec for n in p.layout.nodes if isinstance(n, FieldNode)]
    assert codecs == [Codec("int8"), Codec("float8"), Codec("jsonb"), Codec("uuid", mode="string")]
    p = project({"types": {"id": "string"}})
    assert select(p).startswith('"id"::text, "name"')


def test_global_uuid_string_does_not_override_a_uuid_type_override() -> None:
    p = project({"include": ["u"], "types": {"u": "uuid"}}, uuid="string")
    assert p.layout.nodes[1] == FieldNode("u", 1, Codec("uuid"))


def test_partitioned_table_without_key_names_rows_by_relation_and_ctid() -> None:
    # Issue 10 item 4 (an intended change): a partitioned table without a key used to be refused
    # ("ctids repeat across partitions"); its rows are now named {rel, ctid}, unique across them.
    table = dataclasses.replace(TABLE, relkind="p", primary_key=())
    p = project(table=table)
    assert p.key == () and p.id_is_key
    assert shape(p.layout.nodes)[0] == ("_id", ["rel", "ctid"])
    assert select(p).startswith('tableoid::regclass::text, ctid, "id"')
    assert project(table=table, key="id").key == ("id",)
    # A plain table read with its inheritance children: the same; read alone: the int64 ctid.
    plain = dataclasses.replace(TABLE, primary_key=())
    spanning = build_projection(plain, cfg(), spans=True)
    assert shape(spanning.layout.nodes)[0] == ("_id", ["rel", "ctid"])
    assert project(table=plain).layout.nodes[0] == FieldNode("_id", 0, Codec("tid"))


def test_a_view_without_key_asks_for_key() -> None:
    table = dataclasses.replace(TABLE, relkind="v", primary_key=())
    with pytest.raises(SourceError, match=r"not a table.*--key"):
        project(table=table)


def test_id_is_key_only_when_id_comes_from_the_range_key() -> None:
    assert project().id_is_key
    assert project({"id": ["id"]}).id_is_key
    # mapping.id on another column: _id values are not bounded by the range key's bounds
    other = project({"id": ["name"]})
    assert other.key == ("id",) and not other.id_is_key
    # a keyless table with mapping.id: ctid ranges, but _id from the column
    keyless = project({"id": ["name"]}, table=dataclasses.replace(TABLE, primary_key=()))
    assert keyless.key == () and not keyless.id_is_key
    assert not project({"id_format": "string"}, table=COMPOSITE).id_is_key


def test_column_named_id_underscore_cannot_shadow_the_key() -> None:
    table = dataclasses.replace(TABLE, columns=(*TABLE.columns, col(8, "_id", "text")))
    with pytest.raises(UsageError, match=r"would be written as _id"):
        project(table=table)
    assert (
        shape(project({"fields": {"_id": "legacy_id"}}, table=table).layout.nodes)[-1]
        == "legacy_id"
    )
