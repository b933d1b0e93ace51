"""Live account control: deactivation or a password change ends sessions within seconds (issues 3, 8)."""

from __future__ import annotations

import time
import uuid

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import (
    PASSWORD,
    ServerProcess,
    connect,
    expect_close,
    manage,
    obtain_tokens,
    recv_json,
)


def _shell(e2e_db: E2EDatabase, code: str) -> str:
    """Change an account from another process, as an operator or the admin would."""
    return manage(e2e_db.url, "shell", "-c", code, check=True).stdout


def _new_user(e2e_db: E2EDatabase) -> str:
    name = f"u{uuid.uuid4().hex[:10]}"
    _shell(e2e_db, f"from accounts.models import User; User.objects.create_user({name!r}, password={PASSWORD!r})")
    return name


async def test_deactivated_user_is_disconnected_within_seconds(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Token expiration (operator side) -> deactivating a user from another process closes
    their open sessions with 4403 account_disabled within seconds, though the token is still valid."""
    name = _new_user(e2e_db)
    sessions = [await connect(server, obtain_tokens(server, name)["access"]) for _ in range(2)]
    for ws in sessions:
        await recv_json(ws)
    started = time.monotonic()
    _shell(e2e_db, f"from accounts.models import User; User.objects.filter(username={name!r}).update(is_active=False)")
    for ws in sessions:
        code, reason, _ = await expect_close(ws, timeout=10)
        assert (code, reason) == (4403, "account_disabled")
    assert time.monotonic() - started < scaled(8)


async def test_password_change_ends_sessions(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: a password change ends every open session of that user (4403 account_disabled);
    other users are untouched."""
    name = _new_user(e2e_db)
    ws = await connect(server, obtain_tokens(server, name)["access"])
    await recv_json(ws)
    bystander = await connect(server, obtain_tokens(server, "alice")["access"])
    await recv_json(bystander)
    _shell(
        e2e_db,
        f"from accounts.models import User; u = User.objects.get(username={name!r}); "
        "u.set_password('another-long-password'); u.save()",
    )
    code, reason, _ = await expect_close(ws, timeout=10)
    assert (code, reason) == (4403, "account_disabled")
    await bystander.send('{"event":"ping","id":"p"}')
    assert (await recv_json(bystander))["ref"] == "p"
