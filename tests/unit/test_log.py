"""realtime.ops.structured_logging: tokens never appear in any log line (protocol section 2); one JSON line each."""

from __future__ import annotations

import io
import json
import logging
import sys
from datetime import datetime

import pytest

from realtime.ops.structured_logging import ConnectionLog, JsonFormatter, RedactTokensFilter, redact

JWT = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJ1c2VyX2lkIjo3fQ.c2lnbmF0dXJlLV9-+/="
OPAQUE = "s3cr3t-T0k3n_value~x"


def make_record(msg: str = "hello", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("realtime.test", logging.INFO, __file__, 1, msg, args or None, None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


@pytest.mark.parametrize(
    "line",
    [
        f"GET /ws/?token={JWT} HTTP/1.1",
        f"GET /ws/?token={OPAQUE}",
        f"GET /ws/?a=1&token={JWT}&b=2",
        f"GET /ws/?TOKEN={OPAQUE}",
        f"query_string=b'token={JWT}'",
        f'scope path "/ws/?token={JWT}"',
    ],
)
def test_query_string_token_is_redacted(line):
    """Handshake: ?token=<access> never appears in any log line (redact query strings)"""
    cleaned = redact(line)
    assert JWT not in cleaned
    assert OPAQUE not in cleaned
    assert "token=[redacted]" in cleaned.lower()


def test_other_query_parameters_are_kept():
    """Handshake: redact query strings -> only the token goes, the rest stays readable"""
    assert redact(f"GET /ws/?a=1&token={JWT}&b=2 HTTP/1.1") == "GET /ws/?a=1&token=[redacted]&b=2 HTTP/1.1"


@pytest.mark.parametrize(
    "line",
    [
        f"Authorization: Bearer {JWT}",
        f"authorization: bearer {JWT}",
        f"(b'authorization', b'Bearer {JWT}')",
        f"headers={{'Authorization': 'Bearer {OPAQUE}'}}",
        f"BEARER   {OPAQUE} trailing",
    ],
)
def test_bearer_token_is_redacted(line):
    """Handshake: Authorization: Bearer <access> never appears in any log line"""
    cleaned = redact(line)
    assert JWT not in cleaned
    assert OPAQUE not in cleaned
    assert "[redacted]" in cleaned


@pytest.mark.parametrize(
    "line",
    [
        json.dumps({"access": JWT, "refresh": OPAQUE}),
        json.dumps({"access": JWT, "refresh": OPAQUE}, separators=(",", ":")),
        f'response body {{"refresh" :  "{OPAQUE}", "access":"{JWT}"}}',
        json.dumps({"event": "auth.refresh", "data": {"token": JWT}}),
    ],
)
def test_json_access_refresh_and_token_fields_are_redacted(line):
    """Operating: tokens endpoint {"access","refresh"} and auth.refresh {"token"} never appear in any log line"""
    cleaned = redact(line)
    assert JWT not in cleaned
    assert OPAQUE not in cleaned
    assert cleaned.count("[redacted]") == line.count(JWT) + line.count(OPAQUE)


def test_redacted_json_stays_json_with_other_fields_kept():
    """Handshake: tokens never appear in any log line (the rest of the body stays readable)"""
    cleaned = redact(json.dumps({"access": JWT, "username": "alice"}))
    assert json.loads(cleaned) == {"access": "[redacted]", "username": "alice"}


@pytest.mark.parametrize(
    "line",
    ["connected", "client error code=invalid_json", "user alice sent 3 messages", '{"event": "ping", "id": "c-1"}', ""],
)
def test_text_without_tokens_is_unchanged(line):
    """Handshake: redaction only touches credentials"""
    assert redact(line) == line


def test_filter_redacts_message_args_and_keeps_the_record():
    """Handshake: tokens never appear in any log line -> the filter rewrites the formatted message"""
    record = make_record("upgrade %s from %s", f"/ws/?token={JWT}", "10.0.0.1")
    assert RedactTokensFilter().filter(record) is True
    assert JWT not in record.getMessage()
    assert record.getMessage() == "upgrade /ws/?token=[redacted] from 10.0.0.1"


def test_filter_leaves_clean_records_untouched():
    """Handshake: redaction only touches credentials (clean records keep msg and args)"""
    record = make_record("user %s connected", "alice")
    assert RedactTokensFilter().filter(record) is True
    assert record.msg == "user %s connected"
    assert record.args == ("alice",)


def test_formatter_emits_one_json_object_with_standard_and_extra_keys():
    """Operating: logs are one JSON object per line with the connection's extra keys"""
    record = make_record("client error", conn="c0nn", session="s-1", user="alice", seq=3, code="invalid_json")
    line = JsonFormatter().format(record)
    assert "\n" not in line
    entry = json.loads(line)
    assert isinstance(entry, dict)
    assert entry["msg"] == "client error"
    assert entry["level"] == "info"
    assert entry["logger"] == "realtime.test"
    assert entry["conn"] == "c0nn"
    assert entry["session"] == "s-1"
    assert entry["user"] == "alice"
    assert entry["seq"] == 3
    assert entry["code"] == "invalid_json"
    assert datetime.fromisoformat(entry["ts"]).utcoffset() is not None


def test_formatter_does_not_dump_standard_record_attributes():
    """Operating: one JSON object per line (no LogRecord internals such as args, pathname)"""
    entry = json.loads(JsonFormatter().format(make_record("x %s", "y")))
    assert set(entry) == {"ts", "level", "logger", "msg"}
    assert entry["msg"] == "x y"


def test_formatter_serialises_non_json_extras_as_strings():
    """Operating: one JSON object per line, even for extra values JSON cannot hold"""
    entry = json.loads(JsonFormatter().format(make_record(remote=("10.0.0.1", 5555), obj=object(), when={1, 2})))
    assert entry["remote"] == ["10.0.0.1", 5555]
    assert isinstance(entry["obj"], str)
    assert isinstance(entry["when"], str)


def test_formatter_redacts_tokens_in_exception_text():
    """Handshake: tokens never appear in any log line (tracebacks included)"""
    try:
        raise RuntimeError(f"bad upgrade /ws/?token={JWT}")
    except RuntimeError:
        record = logging.LogRecord("realtime", logging.ERROR, __file__, 1, "handler failed", None, sys.exc_info())
    line = JsonFormatter().format(record)
    entry = json.loads(line)
    assert "RuntimeError" in entry["exc"]
    assert JWT not in line


def test_filter_and_formatter_together_never_write_a_token():
    """Handshake: tokens never appear in any log line -> configured handler output"""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokensFilter())
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("tests.unit.test_log.pipeline")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        log = ConnectionLog(logger, {"conn": "c-1", "server": "node-a"})
        log.info("upgrade %s with %s", f"/ws/?token={JWT}", f"Bearer {OPAQUE}", extra={"event": "connect"})
        log.info("token response %s", json.dumps({"access": JWT, "refresh": OPAQUE}))
    finally:
        logger.removeHandler(handler)
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert JWT not in stream.getvalue()
    assert OPAQUE not in stream.getvalue()
    first = json.loads(lines[0])
    assert first["conn"] == "c-1"
    assert first["server"] == "node-a"
    assert first["event"] == "connect"


def test_connection_log_merges_call_extra_over_bound_extra():
    """Operating: connection-scoped lines carry the connection's id plus the call's own keys"""
    log = ConnectionLog(logging.getLogger("x"), {"conn": "c-1", "event": "bound"})
    msg, kwargs = log.process("m", {"extra": {"event": "connect", "seq": 1}})
    assert msg == "m"
    assert kwargs["extra"] == {"conn": "c-1", "event": "connect", "seq": 1}
    # the bound extra is not modified by a call
    assert log.extra == {"conn": "c-1", "event": "bound"}


class _RequestLike:
    """Stands in for Django's request extra: its str() holds the path with the query string."""

    def __str__(self) -> str:
        return f"<ASGIRequest: GET '/ws/?token={OPAQUE}'>"


def test_bare_jwt_is_redacted_wherever_it_appears():
    """Issue 13: a JWT outside token=/Bearer/JSON fields (a URL path, a repr) is still redacted"""
    cleaned = redact(f"Not Found: /no-such-page/{JWT}/ and '{JWT[:40]}.x'")
    assert "eyJ" not in cleaned
    assert cleaned.count("[redacted-jwt]") == 2


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_filter_redacts_every_field_of_every_record(fmt):
    """Issue 13: message, args, extras (objects, nested containers), traceback and stack, both formats"""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactTokensFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter("%(message)s %(request)s %(nested)s"))
    logger = logging.getLogger(f"tests.unit.test_log.every_field.{fmt}")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        try:
            raise ValueError(f"bad {JWT}")
        except ValueError:
            logger.warning(
                "Upgrade Required: %s",
                f"/ws/?token={OPAQUE}",
                exc_info=True,
                stack_info=True,
                extra={"request": _RequestLike(), "nested": {"h": [("authorization", f"Bearer {OPAQUE}")], "n": 3}},
            )
    finally:
        logger.removeHandler(handler)
    out = stream.getvalue()
    assert OPAQUE not in out
    assert "eyJ" not in out
    assert "ValueError" in out
    if fmt == "json":
        entry = json.loads(out.splitlines()[0])
        assert entry["request"] == "<ASGIRequest: GET '/ws/?token=[redacted]'>"
        assert entry["nested"] == {"h": [["authorization", "Bearer [redacted]"]], "n": 3}


def test_filter_survives_bad_format_arguments_without_printing_them():
    """Issue 13: a record whose args do not fit its format still has its token redacted"""
    record = make_record("two %s %s", f"token={OPAQUE}")
    assert RedactTokensFilter().filter(record) is True
    assert OPAQUE not in record.getMessage()
