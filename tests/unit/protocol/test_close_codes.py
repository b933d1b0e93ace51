"""realtime.protocol.close_codes: the close-code table of PROTOCOL.md section 5."""

from __future__ import annotations

import pytest

from realtime.protocol.close_codes import CLOSE_CODE_FOR, RESUMABLE, CloseCode, CloseReason

# PROTOCOL.md section 5, close codes: (code, reason, client reconnects and resumes?)
CONTRACT = [
    (1001, "going_away", True),
    (1009, "message_too_large", True),
    (1011, "internal_error", True),
    (1012, "service_restart", True),
    (1013, "slow_consumer", True),
    (1013, "try_again_later", True),
    (4401, "token_expired", False),
    (4401, "missing_token", False),
    (4401, "invalid_token", False),
    (4403, "account_disabled", False),
    (4403, "kicked", False),
    (4408, "idle_timeout", False),
    (4429, "rate_limited", True),
    (4429, "too_many_connections", True),
]


@pytest.mark.parametrize(("code", "reason", "_resumes"), CONTRACT)
def test_each_reason_closes_with_its_contract_code(code, reason, _resumes):
    """Close codes: each reason is sent with the code of its row in section 5"""
    assert CLOSE_CODE_FOR[CloseReason(reason)] == code
    assert int(CLOSE_CODE_FOR[CloseReason(reason)]) == code


def test_every_reason_has_exactly_one_code():
    """Close codes: one table ties every CloseReason to its CloseCode"""
    assert set(CLOSE_CODE_FOR) == set(CloseReason)
    assert {reason.value for reason in CloseReason} == {reason for _, reason, _ in CONTRACT}


def test_codes_are_exactly_the_contract_codes():
    """Close codes: 1000, 1001, 1009, 1011, 1012, 1013, 4401, 4403, 4408, 4429"""
    assert {int(code) for code in CloseCode} == {1000} | {code for code, _, _ in CONTRACT}


def test_normal_close_is_1000():
    """Close codes: 1000 -> either side ends normally"""
    assert int(CloseCode.NORMAL) == 1000


@pytest.mark.parametrize("reason", list(CloseReason))
def test_reasons_are_short_ascii_words(reason):
    """Close codes: reasons are short ASCII words (a close reason holds at most 123 bytes)"""
    wire = reason.value
    assert wire.isascii()
    assert len(wire.encode()) <= 123
    assert wire.replace("_", "").isalpha()
    assert wire == wire.lower()
    assert str(reason) == wire


@pytest.mark.parametrize(("code", "reason", "resumes"), CONTRACT)
def test_resumable_matches_the_reconnect_column(code, reason, resumes):
    """Close codes: 'client reconnects?' column -> yes rows are RESUMABLE, no rows are not"""
    assert (CLOSE_CODE_FOR[CloseReason(reason)] in RESUMABLE) is resumes


def test_normal_close_is_not_resumable():
    """Close codes: 1000 -> client does not reconnect"""
    assert CloseCode.NORMAL not in RESUMABLE


@pytest.mark.parametrize("code", list(CloseCode))
def test_codes_are_valid_websocket_close_codes(code):
    """Close codes: every code may be sent in a close frame (RFC 6455 7.4: 1000-1014 or 3000-4999)"""
    assert code not in {1004, 1005, 1006, 1015}
    assert 1000 <= code <= 1014 or 3000 <= code <= 4999
