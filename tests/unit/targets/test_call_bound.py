"""Which bound a MongoDB client's calls really have, and what the messages say set it."""

from __future__ import annotations

from parallelsync.targets.mongodb.client import CALL_FLAG, URI_FLAG, call_bound


def test_the_option_sets_the_bound_when_the_uri_does_not() -> None:
    assert call_bound("mongodb://h:1/?appName=x", 300.0) == (300.0, CALL_FLAG)
    assert call_bound("mongodb://h:1/", 0.0) == (0.0, CALL_FLAG)


def test_a_socket_timeout_in_the_uri_wins_and_is_named() -> None:
    assert call_bound("mongodb://h:1/?socketTimeoutMS=2500", 300.0) == (2.5, URI_FLAG)
    assert call_bound("mongodb://h:1/?appName=x&SOCKETTIMEOUTMS=1000", 5.0) == (1.0, URI_FLAG)
    assert "socketTimeoutMS" in URI_FLAG and CALL_FLAG == "--target-timeout-seconds"


def test_the_long_bound_keeps_its_own_flag_unless_the_uri_sets_one() -> None:
    long = "--long-timeout-seconds"
    assert call_bound("mongodb://h:1/", 86_400.0, long) == (86_400.0, long)
    assert call_bound("mongodb://h:1/?socketTimeoutMS=3000", 86_400.0, long) == (3.0, URI_FLAG)
