"""Declarative schemas for each client event's ``data`` (PROTOCOL.md section 4).

Inbound models ignore unknown keys (section 3) and are strict about types: ``"3"``
is not a version number. :func:`validation_fields` turns pydantic's errors into
the ``fields`` map of a ``validation_error``.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MAX_TEXT_LENGTH = 65_536
MAX_TOKEN_LENGTH = 8192


class ClientData(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore", frozen=True)


class PingData(ClientData):
    ts: Any = None


class AuthRefreshData(ClientData):
    token: Annotated[str, Field(min_length=1, max_length=MAX_TOKEN_LENGTH)]


_REASONS = {
    "missing": "required",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "dict_type": "must be an object",
    "list_type": "must be an array",
    "bool_type": "must be a boolean",
    "string_too_short": "too short",
    "string_too_long": "too long",
    "string_pattern_mismatch": "invalid format",
    "greater_than_equal": "too small",
    "less_than_equal": "too large",
}


def validation_fields(exc: ValidationError) -> dict[str, str]:
    fields: dict[str, str] = {}
    for error in exc.errors(include_url=False, include_input=False):
        path = ".".join(str(part) for part in error["loc"]) or "data"
        fields.setdefault(path, _REASONS.get(error["type"], error["msg"]))
    return fields
