"""Secrets never survive redaction, whatever the connection string looks like."""

from __future__ import annotations

import pytest

from parallelsync.redact import redact_dsn, redact_uri


@pytest.mark.parametrize(
    ("uri", "shown"),
    [
        ("mongodb://u:S3cret@h:1/", "mongodb://u:***@h:1/"),
        ("mongodb://u:S3c@ret@h:1/", "mongodb://u:***@h:1/"),  # unescaped '@' in the password
        ("mongodb://u:S3cret@h1,h2/?replicaSet=r", "mongodb://u:***@h1,h2/?replicaSet=r"),
        ("mongodb://h/?password=S3cret&w=1", "mongodb://h/?password=***&w=1"),
        ("mongodb://h1:1,h2:2/db?x=1", "mongodb://h1:1,h2:2/db?x=1"),
        ("postgresql://u@h/db", "postgresql://u@h/db"),
    ],
)
def test_redact_uri(uri: str, shown: str) -> None:
    assert redact_uri(uri) == shown
    assert "S3c" not in redact_uri(uri)


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://u:S3cret@h:5432/db",
        "postgresql://u@h/db?password=S3cret",
        "host=h user=u password=S3cret dbname=db",
        "host=h user=u password='S3cret with spaces' dbname=db",
        "host=h password=S3cret port",  # malformed: falls back to the regex
    ],
)
def test_redact_dsn(dsn: str) -> None:
    assert "S3cret" not in redact_dsn(dsn)
