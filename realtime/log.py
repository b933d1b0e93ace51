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

# Neither format prints the caller's file and line, thread or process: don't compute them
# (the logging docs' "Optimization" section). Walking the stack for the caller was ~4 % of
# a connection's setup, which logs one line.
logging._srcfile = None
logging.logThreads = False
logging.logProcesses = False
logging.logMultiprocessing = False

# Attributes every LogRecord has; anything else was passed through ``extra``.
_STANDARD_ATTRS = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys()
    | {"message", "asctime", "taskName", "color_message"}  # uvicorn's ANSI-coloured duplicate
)

# ``token=...`` in query strings and ``Bearer ...`` in headers: the only places a
# client puts a credential; redacting both keeps access logs and errors safe.
_TOKEN_PATTERNS = (
    re.compile(r"(?i)(\btoken=)[^&\s\"']+"),
    re.compile(r"(?i)(\bbearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r"(?i)(\"(?:access|refresh|token)\"\s*:\s*\")[^\"]+"),
)


# One search rules out nearly every line before the three substitutions run.
_MAY_HOLD_TOKEN = re.compile(r"(?i)token|bearer|access|refresh")


def redact(text: str) -> str:
    if _MAY_HOLD_TOKEN.search(text) is None:
        return text
    for pattern in _TOKEN_PATTERNS:
        text = pattern.sub(r"\1[redacted]", text)
    return text


class RedactTokensFilter(logging.Filter):
    """Rewrites the formatted message so no handler ever sees a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


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
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return orjson.dumps(entry, default=str).decode()


class ConnectionLog(logging.LoggerAdapter[logging.Logger]):
    """A logger bound to one connection's identity."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = dict(self.extra or {})
        extra.update(kwargs.get("extra") or {})
        kwargs["extra"] = extra
        return msg, kwargs
