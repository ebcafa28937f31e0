"""Pure parts of applying: which column changes leave every document a fresh copy's
(`ShapeRule`), and which MongoDB errors are worth writing a chunk again for (`transient`)."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    AutoReconnect,
    BulkWriteError,
    DuplicateKeyError,
    NetworkTimeout,
    NotPrimaryError,
    OperationFailure,
    PyMongoError,
)

from parallelsync.cdc.apply import ShapeRule, transient

IGNORING = ShapeRule(
    used=frozenset({"id", "note"}),
    mentioned=frozenset({"id", "note", "secret"}),
    ignores_new=True,
    include_only=True,
)


@pytest.mark.parametrize(
    ("rule", "added", "dropped", "retyped", "harmful"),
    [
        (IGNORING, ["extra"], [], [], False),  # include + ignore: a fresh copy leaves it out
        (ShapeRule(used=frozenset({"id"})), ["extra"], [], [], True),  # no include: copied
        (IGNORING, [], ["note"], [], True),  # a mapped column dropped
        (IGNORING, [], [], ["note"], True),  # a mapped column retyped
        (IGNORING, [], ["secret"], [], True),  # named by the mapping: a fresh copy refuses
        (IGNORING, [], ["other"], ["other2"], False),  # neither used nor named
        (IGNORING, [], [], [], False),  # only the order differs: values are found by name
        # No include list: every column of the copy's table is in the documents, a dropped or
        # retyped one too (`used`, from the table now, no longer lists a dropped column).
        (ShapeRule(used=frozenset({"id"})), [], ["qty"], [], True),
        (ShapeRule(used=frozenset({"id"})), [], [], ["qty"], True),
    ],
)
def test_shape_rule(
    rule: ShapeRule, added: list[str], dropped: list[str], retyped: list[str], harmful: bool
) -> None:
    assert rule.harmful(added, dropped, retyped) is harmful


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (AutoReconnect("connection closed"), True),
        (NetworkTimeout("timed out"), True),
        (NotPrimaryError("not primary", {}), True),
        (OperationFailure("stepped down", code=189), True),
        (
            OperationFailure("labelled", code=1, details={"errorLabels": ["RetryableWriteError"]}),
            True,
        ),
        (OperationFailure("bad value", code=2), False),
        (DuplicateKeyError("dup", code=11000), False),
        (BulkWriteError({"writeErrors": [{"code": 11000, "errmsg": "dup"}]}), False),
        (BulkWriteError({"writeErrors": [{"code": 10107, "errmsg": "not primary"}]}), True),
        (BulkWriteError({"writeErrors": [], "writeConcernErrors": [{"code": 64}]}), True),
        (PyMongoError("other"), False),
    ],
)
def test_transient(exc: PyMongoError, expected: bool) -> None:
    assert transient(exc) is expected
