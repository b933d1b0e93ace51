"""Authentication at the handshake and during the session (issue 2; PROTOCOL.md sections 2 and 4)."""

from __future__ import annotations

import asyncio
import time

from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    ServerProcess,
    call,
    connect,
    db_query,
    expect_close,
    mint_token,
    obtain_tokens,
    recv_json,
)


async def test_connect_sends_welcome_first(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Connection: Connect -> OPEN and the first frame is session.welcome with the contract's fields."""
    ws = await connect(server, obtain_tokens(server, "alice")["access"], user_agent_header="e2e-agent/1")
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome"
    data = welcome["data"]
    assert data["user"] == {"id": e2e_db.user_ids["alice"], "username": "alice", "is_staff": False}
    assert data["protocol"] == 1
    assert data["heartbeat_interval"] == 25
    assert data["idle_timeout"] == 300
    assert data["max_message_bytes"] == 1048576
    assert data["server"].endswith(f":{server.port}")
    assert data["token_expires_at"].endswith("Z")
    rows = db_query(
        e2e_db.url,
        "SELECT user_agent, disconnected_at FROM realtime_connectionsession WHERE id = %s",
        (data["session_id"].replace("-", "") if e2e_db.url.startswith("sqlite") else data["session_id"],),
    )
    assert rows == [("e2e-agent/1", None)]
    await ws.close()


async def test_no_token_closes_4401_missing_token(server: ServerProcess) -> None:
    """Security: No auth token -> close 4401 missing_token, nothing else sent."""
    ws = await connect(server)
    code, reason, frames = await expect_close(ws)
    assert (code, reason, frames) == (4401, "missing_token", [])


async def test_forged_token_closes_4401_invalid_token(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Invalid token (forged) -> close 4401 invalid_token."""
    forged = mint_token(e2e_db.user_ids["alice"], expires_in=300, key="not-the-server-key-0123456789abcdef")
    for token in (
        forged,
        "garbage.token.value",
        mint_token(e2e_db.user_ids["alice"], expires_in=300, token_type="refresh"),
    ):
        ws = await connect(server, token)
        assert await expect_close(ws) == (4401, "invalid_token", [])


async def test_bearer_header_is_accepted(server: ServerProcess) -> None:
    token = obtain_tokens(server, "alice")["access"]
    ws = await connect(server, None, additional_headers={"Authorization": f"Bearer {token}"})
    assert (await recv_json(ws))["event"] == "session.welcome"
    await ws.close()


async def test_expired_token_closes_4401_token_expired(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Invalid token (expired) -> close 4401 token_expired."""
    ws = await connect(server, mint_token(e2e_db.user_ids["alice"], expires_in=-5))
    assert await expect_close(ws) == (4401, "token_expired", [])


async def test_inactive_user_closes_4403_account_disabled(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Invalid token (disabled account) -> close 4403 account_disabled."""
    ws = await connect(server, mint_token(e2e_db.user_ids["carol"], expires_in=300))
    assert await expect_close(ws) == (4403, "account_disabled", [])


async def test_token_expiry_mid_session_warns_then_closes(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Token expiration -> auth.expiring, then close 4401 token_expired when the token expires."""
    ws = await connect(server, mint_token(e2e_db.user_ids["alice"], expires_in=3))
    assert (await recv_json(ws))["event"] == "session.welcome"
    started = time.monotonic()
    code, reason, frames = await expect_close(ws, timeout=10)
    assert (code, reason) == (4401, "token_expired")
    assert [f["event"] for f in frames] == ["auth.expiring"]
    assert frames[0]["data"]["expires_in"] >= 1
    assert time.monotonic() - started < 6


async def test_auth_refresh_extends_the_session(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Token expiration -> auth.refresh with a fresh token of the same user keeps the session open."""
    alice = e2e_db.user_ids["alice"]
    ws = await connect(server, mint_token(alice, expires_in=2))
    await recv_json(ws)
    reply = await call(ws, {"event": "auth.refresh", "id": "r1", "data": {"token": mint_token(alice, expires_in=120)}})
    assert reply["event"] == "ack"
    assert reply["ref"] == "r1"
    assert reply["data"]["token_expires_at"].endswith("Z")
    await asyncio.sleep(3)  # time passing is the subject: past the first token's expiry, still open
    assert (await call(ws, {"event": "ping", "id": "p"}))["event"] == "ack"
    await ws.close()


async def test_auth_refresh_refuses_other_users_and_bad_tokens(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: auth.refresh -> another user's token is forbidden; invalid/expired is validation_error on token."""
    ws = await connect(server, mint_token(e2e_db.user_ids["alice"], expires_in=120))
    await recv_json(ws)
    bob = mint_token(e2e_db.user_ids["bob"], expires_in=120)
    reply = await call(ws, {"event": "auth.refresh", "id": "x", "data": {"token": bob}})
    assert reply["data"]["code"] == "forbidden"
    reply = await call(ws, {"event": "auth.refresh", "data": {"token": "nope"}})
    assert (reply["data"]["code"], reply["data"]["fields"]) == ("validation_error", {"token": "invalid"})
    expired = mint_token(e2e_db.user_ids["alice"], expires_in=-1)
    reply = await call(ws, {"event": "auth.refresh", "data": {"token": expired}})
    assert reply["data"]["fields"] == {"token": "expired"}
    await ws.close()
