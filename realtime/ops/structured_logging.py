"""Structured logging: one JSON object per line, with tokens redacted everywhere.

Connection-scoped lines go through :class:`ConnectionLog`, which stamps the
connection id, session id, user and server on every record, so one connection can
be followed with ``grep '"conn": "<id>"'`` across every server's log.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime
from typing import Any

import orjson


class NoCallerLogger(logging.Logger):
    """A logger that does not walk the stack for its caller's file, line and function.

    Neither format prints them, and every connection's setup logs a line: the walk would be
    paid per connection for nothing. ``findCaller`` is the documented hook for this (the logging docs'
    "Optimization" section otherwise suggests clearing a private module attribute).
    """

    def findCaller(self, stack_info: bool = False, stacklevel: int = 1) -> tuple[str, int, str, str | None]:
        if stack_info:
            return super().findCaller(stack_info, stacklevel + 1)
        return "(unknown file)", 0, "(unknown function)", None


# Loggers made from here on (the project's own, made when their modules are imported after
# the logging configuration loads this module) skip the stack walk; neither format prints
# the thread or process either, so those are not looked up.
logging.setLoggerClass(NoCallerLogger)
logging.logThreads = False
logging.logProcesses = False
logging.logMultiprocessing = False

# Attributes every LogRecord has; anything else was passed through ``extra``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI-coloured duplicate
)

# ``token=...`` in query strings, ``Bearer ...`` in headers, the token fields of JSON
# bodies, and any bare JWT (its header segment is base64url JSON, so it starts ``eyJ``):
# a token that reached a log line in some other shape (a URL path, a repr) is still a JWT.
_TOKEN_PATTERNS = (
    (re.compile(r"(?i)(\btoken=)[^&\s\"']+"), r"\1[redacted]"),
    (re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"), r"\1[redacted]"),
    (re.compile(r"(?i)(\"(?:access|refresh|token)\"\s*:\s*\")[^\"]+"), r"\1[redacted]"),
    (re.compile(r"eyJ[A-Za-z0-9_-]*(?:\.[A-Za-z0-9_-]*){1,2}"), "[redacted-jwt]"),
)


# One search rules out nearly every line before the substitutions run.
_MAY_HOLD_TOKEN = re.compile(r"(?i)token|bearer|access|refresh|eyJ")

# Extras nested deeper than this are logged as their redacted ``str``.
_SCRUB_DEPTH = 4


def redact(text: str) -> str:
    if _MAY_HOLD_TOKEN.search(text) is None:
        return text
    for pattern, replacement in _TOKEN_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _scrub(value: Any, depth: int = 0) -> Any:
    """``value`` with every string in it redacted; objects become their redacted ``str``.

    An object's ``str`` is what a formatter would print (the JSON one uses ``default=str``),
    and it may hold a token: Django's ``request`` extra prints its path with the query.
    """
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if depth < _SCRUB_DEPTH:
        if isinstance(value, dict):
            return {redact(str(k)): _scrub(v, depth + 1) for k, v in value.items()}
        if isinstance(value, list | tuple | set | frozenset):
            return [_scrub(v, depth + 1) for v in value]
    try:
        return redact(str(value))
    except Exception:  # a broken __str__ must not lose the line, nor print a repr
        return f"<unprintable {type(value).__name__}>"


class RedactTokensFilter(logging.Filter):
    """Rewrites every field of a record so that no handler, whatever its format, sees a token:
    the message and its arguments, every ``extra``, the traceback and the stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # bad arguments: logging would print them raw in its error report
            message = f"{record.msg!s} {record.args!r}"
        cleaned = redact(message)
        if cleaned != message or not isinstance(record.msg, str):
            record.msg, record.args = cleaned, None
            if hasattr(record, "color_message"):
                record.color_message = cleaned  # uvicorn's coloured copy of the message
        fields = record.__dict__
        for key in [key for key in fields if key not in _STANDARD_ATTRS and not key.startswith("_")]:
            fields[key] = _scrub(fields[key])
        if record.exc_info and not record.exc_text:
            # Formatters print ``exc_text`` when it is set; fill it in, redacted.
            record.exc_text = _EXC_FORMATTER.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


_EXC_FORMATTER = logging.Formatter()


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info or record.exc_text:
            entry["exc"] = redact(record.exc_text or self.formatException(record.exc_info))  # type: ignore[arg-type]
        if record.stack_info:
            entry["stack"] = redact(record.stack_info)
        return orjson.dumps(entry, default=str).decode()


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to one connection's identity."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs
