"""Close-code policy and the error hierarchy; the client's codes agree with the server's."""

from __future__ import annotations

import pytest

from realtime.protocol.close_codes import CloseCode as ServerCloseCode
from realtime_client import ClientClosed, ConnectionLost, MessageTooLarge, NotRecovered, RealtimeError, ServerError
from realtime_client.codes import CloseAction, CloseCode, close_action, stop_code


def test_client_close_codes_match_the_server() -> None:
    for code in ServerCloseCode:
        assert CloseCode[code.name] == code.value


@pytest.mark.parametrize(
    ("code", "reason", "provider", "expected"),
    [
        (None, None, False, CloseAction.RECONNECT),
        (1000, None, False, CloseAction.STOP),
        (1001, "going_away", False, CloseAction.RECONNECT),
        (1009, "message_too_large", False, CloseAction.RECONNECT),
        (1011, "internal_error", False, CloseAction.RECONNECT),
        (1012, "service_restart", False, CloseAction.RECONNECT),
        (1013, "slow_consumer", False, CloseAction.RECONNECT),
        (4429, "rate_limited", False, CloseAction.RECONNECT),
        (4401, "token_expired", True, CloseAction.REFRESH_TOKEN),
        (4401, "token_expired", False, CloseAction.STOP),
        (4401, "invalid_token", True, CloseAction.STOP),
        (4401, "missing_token", True, CloseAction.STOP),
        (4403, "kicked", True, CloseAction.STOP),
        (4403, "account_disabled", False, CloseAction.STOP),
        (4408, "idle_timeout", False, CloseAction.STOP),
    ],
)
def test_close_action(code: int | None, reason: str | None, provider: bool, expected: CloseAction) -> None:
    assert close_action(code, reason, has_token_provider=provider, reconnect_on_idle=False) is expected


def test_idle_timeout_reconnects_only_when_asked() -> None:
    assert close_action(4408, "idle_timeout", has_token_provider=False, reconnect_on_idle=True) is CloseAction.RECONNECT


def test_stop_code_names_the_reason() -> None:
    assert stop_code(4403, "kicked") == "kicked"
    assert stop_code(1000, None) == "connection_closed"
    assert stop_code(4999, None) == "closed_4999"


def test_every_error_is_a_realtime_error_with_its_wire_code() -> None:
    assert RealtimeError("not_recovered").code == NotRecovered().code == "not_recovered"
    assert MessageTooLarge().code == "message_too_large"
    assert ClientClosed().code == "closed"
    error = ServerError("validation_error", {"message": "data.text: required", "fields": {"text": "required"}})
    assert error.data["fields"] == {"text": "required"}
    assert "data.text: required" in str(error)
    for cls in (ServerError, ConnectionLost, ClientClosed, MessageTooLarge, NotRecovered):
        assert issubclass(cls, RealtimeError)
