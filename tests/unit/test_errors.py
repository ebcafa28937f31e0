"""The error hierarchy crosses process boundaries by pickling: messages and details survive."""

from __future__ import annotations

import pickle
import traceback

from parallelsync.errors import (
    EXIT_ENCODE,
    EXIT_SOURCE,
    EncodeError,
    InternalError,
    SourceConnectionLost,
)


def test_errors_pickle_with_their_class_message_and_flags() -> None:
    lost = pickle.loads(pickle.dumps(SourceConnectionLost("server closed the connection")))
    assert type(lost) is SourceConnectionLost
    assert str(lost) == "server closed the connection"
    assert lost.transient and lost.exit_code == EXIT_SOURCE
    bad = pickle.loads(pickle.dumps(EncodeError("cannot encode column 'at'")))
    assert type(bad) is EncodeError and not bad.transient and bad.exit_code == EXIT_ENCODE


def test_an_internal_error_keeps_the_traceback_text_of_where_it_happened() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        err = InternalError(f"internal error copying a range: {exc!r}", traceback.format_exc())
    back = pickle.loads(pickle.dumps(err))
    assert type(back) is InternalError
    assert str(back) == "internal error copying a range: KeyError('missing')"
    assert "KeyError: 'missing'" in back.details
    assert "test_an_internal_error_keeps_the_traceback_text" in back.details
