"""Connecting to MongoDB with failures turned into clear, password-free errors."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

from pymongo import MongoClient
from pymongo.errors import ConfigurationError, InvalidURI, OperationFailure, PyMongoError

from parallelsync.errors import TargetError, TargetUnavailable, UsageError
from parallelsync.redact import redact_uri, remember, scrub_for, scrub_known, split_userinfo

# Long enough for a replica-set election, short enough that a wrong host fails the preflight fast.
SERVER_SELECTION_MS = 15_000


# How the messages name the bound of ordinary calls when the URI did not set its own.
CALL_FLAG = "--target-timeout-seconds"
URI_FLAG = "socketTimeoutMS in the target URI"


def call_bound(uri: str, seconds: float, flag: str = CALL_FLAG) -> tuple[float, str]:
    """The bound a client of `uri` made by `connect(uri, call_timeout_s=seconds)` really has,
    and what sets it: a socketTimeoutMS in the URI wins over the option (see `connect`), so a
    timeout message must name that, not the flag the user did not use."""
    match = re.search(r"[?&]sockettimeoutms=(\d+)", uri, flags=re.IGNORECASE)
    if match:
        return int(match.group(1)) / 1000, URI_FLAG
    return seconds, flag


def timeout_error(what: str, exc: PyMongoError, seconds: float, flag: str) -> TargetError:
    """The error for a failed call to MongoDB, saying which call and, for a timeout, the bound."""
    if exc.timeout:
        return TargetUnavailable(
            f"{what}: MongoDB did not answer within {seconds:g} s ({flag}); "
            f"check the server ({_first_line(exc)})"
        )
    return TargetError(f"{what} failed: {scrub_known(str(exc))}")


@contextlib.contextmanager
def bounded(what: str, seconds: float, flag: str = CALL_FLAG) -> Iterator[None]:
    """A failure of the block's calls names `what` (and, for a timeout, the bound `seconds` that
    the client's socketTimeoutMS set: see `connect`)."""
    try:
        yield
    except PyMongoError as exc:
        raise timeout_error(what, exc, seconds, flag) from None


def connect(
    uri: str,
    *,
    timeout_ms: int = SERVER_SELECTION_MS,
    call_timeout_s: float | None = None,
    **kwargs: Any,
) -> MongoClient[Any]:
    """A client that has answered `ping`; TLS and auth options pass through the URI.

    `call_timeout_s` bounds how long any call of the client waits for the server's answer
    (socketTimeoutMS; 0 or None: unbounded). Not pymongo's timeoutMS: under it, waiting for a
    server that is down takes the whole bound instead of serverSelectionTimeoutMS, so a restart
    or an outage would hold every insert for minutes before its retry."""
    shown = redact_uri(uri)
    remember(uri)
    if call_timeout_s and "sockettimeoutms" not in uri.lower():
        kwargs.setdefault("socketTimeoutMS", int(call_timeout_s * 1000))
    if "serverselectiontimeoutms" in uri.lower():
        timeout_ms = int(uri.lower().split("serverselectiontimeoutms=")[1].split("&")[0])
    else:
        kwargs.setdefault("serverSelectionTimeoutMS", timeout_ms)
    try:
        client: MongoClient[Any] = MongoClient(uri, **kwargs)
    except (InvalidURI, ConfigurationError, ValueError) as exc:
        info = split_userinfo(uri)
        hint = (
            "; percent-encode the user name and password (urllib.parse.quote_plus)"
            if info is not None and info.password is not None
            else ""
        )
        raise UsageError(f"invalid MongoDB URI {shown}: {scrub_for(str(exc), uri)}{hint}") from None
    try:
        client.admin.command("ping")
    except OperationFailure as exc:
        client.close()
        reason = str((exc.details and exc.details.get("errmsg")) or exc)
        raise TargetError(
            f"MongoDB at {shown} refused the connection: {scrub_for(reason, uri)}"
        ) from None
    except PyMongoError as exc:
        client.close()
        raise TargetUnavailable(
            f"cannot reach MongoDB at {shown} within {timeout_ms // 1000} s: "
            f"{scrub_for(_first_line(exc), uri)}; check the host, port and network"
        ) from None
    return client


def _first_line(exc: BaseException) -> str:
    text = str(exc).split(", Timeout:")[0]
    return text.splitlines()[0] if text else type(exc).__name__
