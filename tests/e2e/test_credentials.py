"""Credentials you can revoke, rights that follow the account, defaults nobody can forge (issue 15,
PROTOCOL.md section 11), against real ``manage.py serve`` processes over real sockets."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import shutil
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.asyncio.client import ClientConnection

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase, ServerFactory
from tests.e2e.helpers import (
    PASSWORD,
    PYTHON,
    REPO,
    SECRET_KEY,
    ServerProcess,
    base_env,
    connect,
    expect_close,
    http_json,
    manage,
    mint_token,
    raw_http,
    recv_json,
)
from tests.e2e.redis_server import RedisServer, free_port

# The key project/settings.py signed with when DJANGO_SECRET_KEY was unset (until issue 15):
# it is public, so anyone could mint tokens for any user of a server started without a key.
OLD_DEV_KEY = "dev-insecure-key-change-me-0123456789abcdef0123456789abcdef"

# The production environment docs/operations.md documents ("Production settings").
PRODUCTION_ENV = {
    "DJANGO_ALLOWED_HOSTS": "realtime.example.com",
    "DJANGO_HTTPS": "true",
    "DJANGO_HSTS_SECONDS": "31536000",
    "DJANGO_HSTS_INCLUDE_SUBDOMAINS": "true",
    "DJANGO_HSTS_PRELOAD": "true",
}


def _shell(e2e_db: E2EDatabase, code: str) -> str:
    """Change an account from another process, as an operator or the admin would."""
    return manage(e2e_db.url, "shell", "-c", code, check=True).stdout


def _set_staff(e2e_db: E2EDatabase, username: str, staff: bool) -> None:
    """Flip is_staff with one committed UPDATE, as another service sharing the database would."""
    sql = "UPDATE accounts_user SET is_staff = %s WHERE username = %s"
    if e2e_db.url.startswith("sqlite:"):
        import sqlite3

        with sqlite3.connect(e2e_db.url.removeprefix("sqlite:///")) as conn:
            conn.execute(sql.replace("%s", "?"), (staff, username))
    else:
        import psycopg

        with psycopg.connect(e2e_db.url) as conn:
            conn.execute(sql, (staff, username))


def _new_user(e2e_db: E2EDatabase) -> str:
    name = f"c{uuid.uuid4().hex[:10]}"
    create = f"User.objects.create_user({name!r}, password={PASSWORD!r})"
    _shell(e2e_db, f"from accounts.models import User; {create}")
    return name


def _login(server: ServerProcess, username: str, password: str = PASSWORD) -> tuple[int, Any]:
    status, _, body = http_json(
        "POST", f"{server.http_url}/api/auth/token/", {"username": username, "password": password}
    )
    return status, body


def _refresh(server: ServerProcess, refresh: str) -> tuple[int, Any]:
    status, _, body = http_json("POST", f"{server.http_url}/api/auth/token/refresh/", {"refresh": refresh})
    return status, body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _welcomed(server: ServerProcess, token: str) -> ClientConnection:
    ws = await connect(server, token)
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome", welcome
    return ws


async def _reply(ws: ClientConnection, frame: dict[str, Any]) -> dict[str, Any]:
    """Send ``frame`` and return the reply to it, skipping pushes in between."""
    await ws.send(json.dumps(frame))
    while True:
        message = await recv_json(ws)
        if message.get("ref") == frame["id"]:
            return message


# Revocation -------------------------------------------------------------------------------


async def test_password_change_revokes_tokens_issued_before_it(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Invalid token -> after a password change, the refresh token issued before it gets
    401, the old access token closes 4401 invalid_token at connect, and auth.refresh with it is a
    validation_error naming token; tokens issued after the change work."""
    name = _new_user(e2e_db)
    status, old = _login(server, name)
    assert status == 200, old
    _shell(
        e2e_db,
        f"from accounts.models import User; u = User.objects.get(username={name!r}); "
        f"u.set_password('a-new-password-7781'); u.save()",
    )
    status, body = _refresh(server, old["refresh"])
    assert status == 401, body
    status, _, body = http_json("GET", f"{server.http_url}/api/resources/", headers=_bearer(old["access"]))
    assert status == 401, body
    ws = await connect(server, old["access"])
    code, reason, frames = await expect_close(ws)
    assert (code, reason, frames) == (4401, "invalid_token", [])

    status, new = _login(server, name, "a-new-password-7781")
    assert status == 200, new
    ws = await _welcomed(server, new["access"])
    reply = await _reply(ws, {"event": "auth.refresh", "id": "r1", "data": {"token": old["access"]}})
    assert (reply["event"], reply["data"]["code"]) == ("error", "validation_error"), reply
    assert "token" in reply["data"]["fields"], reply
    reply = await _reply(ws, {"event": "auth.refresh", "id": "r2", "data": {"token": new["access"]}})
    assert reply["event"] == "ack", reply
    assert _refresh(server, new["refresh"])[0] == 200
    assert http_json("GET", f"{server.http_url}/api/resources/", headers=_bearer(new["access"]))[0] == 200


async def test_refresh_tokens_rotate_and_a_used_one_is_refused(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: a refresh returns a new refresh token and blacklists the one it used: replaying a
    stolen, already used refresh token gets 401."""
    _, first = _login(server, "bob")
    status, second = _refresh(server, first["refresh"])
    assert status == 200, second
    assert second["refresh"] != first["refresh"]
    assert (await _welcomed(server, second["access"])) is not None
    status, body = _refresh(server, first["refresh"])
    assert status == 401, body
    assert _refresh(server, second["refresh"])[0] == 200


async def test_logout_revokes_the_refresh_token(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: POST /api/auth/logout/ {"refresh"} revokes that refresh token; garbage gets 401, not 500."""
    _, tokens = _login(server, "bob")
    status, _, body = http_json("POST", f"{server.http_url}/api/auth/logout/", {"refresh": tokens["refresh"]})
    assert status == 200, body
    assert _refresh(server, tokens["refresh"])[0] == 401
    status, _, body = http_json("POST", f"{server.http_url}/api/auth/logout/", {"refresh": "not-a-token"})
    assert status == 401, body
    status, _, body = http_json("POST", f"{server.http_url}/api/auth/logout/", {})
    assert status == 400, body
    assert "refresh" in body


# Rights follow the account ----------------------------------------------------------------


async def _staff_answer(ws: ClientConnection, ref: str) -> str:
    """``not_found`` while admin.kick is allowed (no such user), ``forbidden`` once it is not."""
    reply = await _reply(ws, {"event": "admin.kick", "id": ref, "data": {"username": "nobody-" + ref}})
    assert reply["event"] == "error", reply
    code: str = reply["data"]["code"]
    return code


async def _until_answer(sessions: list[ClientConnection], wanted: str, timeout: float) -> float:
    started = time.monotonic()
    pending = list(sessions)
    while pending:
        assert time.monotonic() - started < timeout, f"still not {wanted} after {timeout:.1f} s"
        pending = [ws for ws in pending if await _staff_answer(ws, uuid.uuid4().hex[:8]) != wanted]
        if pending:
            await asyncio.sleep(0.05)
    return time.monotonic() - started


async def test_losing_staff_takes_effect_on_open_sessions_on_every_server(
    server: ServerProcess, server_factory: ServerFactory, e2e_db: E2EDatabase
) -> None:
    """Security: Unauthorized action -> a staff user demoted mid-session gets forbidden for
    admin.kick within 2 s on every server it is connected to; promoted again, it may act again."""
    other = server_factory()
    token = mint_token(e2e_db.user_ids["admin"], expires_in=300)
    sessions = [await _welcomed(server, token), await _welcomed(other, token)]
    assert [await _staff_answer(ws, f"s{i}") for i, ws in enumerate(sessions)] == ["not_found", "not_found"]
    try:
        _set_staff(e2e_db, "admin", False)
        took = await _until_answer(sessions, "forbidden", timeout=scaled(10))
        assert took < scaled(2.0) + 0.3, f"demotion took {took:.2f} s"  # the contract's 2 s, plus a query
    finally:
        _set_staff(e2e_db, "admin", True)
    took = await _until_answer(sessions, "not_found", timeout=scaled(10))
    assert took < scaled(2.0) + 0.3, f"promotion took {took:.2f} s"


# Production defaults ----------------------------------------------------------------------


def _production_env(e2e_db: E2EDatabase, **overrides: str) -> dict[str, str]:
    env = base_env(e2e_db.url, **overrides)
    env.pop("DJANGO_DEBUG", None)
    return env


@pytest.mark.parametrize(
    "key",
    [None, OLD_DEV_KEY],
    ids=["unset", "old-development-key"],
)
def test_production_start_refuses_a_missing_or_known_secret_key(e2e_db: E2EDatabase, key: str | None) -> None:
    """Security: Invalid token (forged) -> with debug off, `serve` without DJANGO_SECRET_KEY or with
    the repository's old development key exits non-zero naming the variable, instead of signing
    tokens anyone can forge."""
    env = _production_env(e2e_db)
    env.pop("DJANGO_SECRET_KEY")
    if key is not None:
        env["DJANGO_SECRET_KEY"] = key
    proc = subprocess.Popen(
        [PYTHON, "manage.py", "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _, stderr = proc.communicate(timeout=scaled(30))
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("the server started with a forgeable signing key")
    assert proc.returncode != 0
    assert "DJANGO_SECRET_KEY" in stderr.splitlines()[-1], stderr[-2000:]


async def test_token_signed_with_the_old_development_key_is_refused(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Security: Invalid token (forged) -> a token signed with the key that used to be in the
    repository closes 4401 invalid_token."""
    ws = await connect(server, mint_token(e2e_db.user_ids["admin"], expires_in=300, key=OLD_DEV_KEY))
    code, reason, frames = await expect_close(ws)
    assert (code, reason, frames) == (4401, "invalid_token", [])


def test_check_deploy_passes_with_the_documented_production_environment(e2e_db: E2EDatabase) -> None:
    """Django's deployment checklist finds nothing with the environment docs/operations.md documents."""
    documented = (REPO / "docs" / "operations.md").read_text()
    assert all(name in documented for name in PRODUCTION_ENV), "docs/operations.md no longer documents it"
    env = _production_env(e2e_db, DJANGO_SECRET_KEY=secrets.token_urlsafe(50), **PRODUCTION_ENV)
    result = subprocess.run(
        [PYTHON, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout, result.stdout


def test_unknown_host_header_is_refused_by_default(server: ServerProcess) -> None:
    """Security: DJANGO_ALLOWED_HOSTS defaults to local names outside debug: a forged Host gets 400,
    without a logged traceback per probe."""
    request = b"GET /healthz HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n"
    assert raw_http(server.port, request)[0] == 400
    request = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    assert raw_http(server.port, request)[0] == 200
    assert "evil.example" not in server.log_text()  # refused quietly: probing fills no log


# Asymmetric tokens ------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _hs256_with_key(claims: dict[str, Any], key: bytes) -> str:
    """HS256 by hand: PyJWT refuses a PEM as an HMAC secret, an attacker does not."""
    signing_input = _b64(b'{"alg":"HS256","typ":"JWT"}') + "." + _b64(json.dumps(claims).encode())
    return signing_input + "." + _b64(hmac.new(key, signing_input.encode(), hashlib.sha256).digest())


async def test_rs256_tokens_verify_with_the_public_key_only(
    server_factory: ServerFactory, e2e_db: E2EDatabase, tmp_path: Path
) -> None:
    """JWT_ALGORITHM=RS256 with key files: issued tokens verify with the public key alone, connect,
    and neither an HS256 token signed with DJANGO_SECRET_KEY nor one "signed" with the public key
    (algorithm confusion) is accepted."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = private.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    (tmp_path / "jwt.key").write_bytes(private_pem)
    (tmp_path / "jwt.pub").write_bytes(public_pem)
    server = server_factory(
        JWT_ALGORITHM="RS256",
        JWT_PRIVATE_KEY_FILE=str(tmp_path / "jwt.key"),
        JWT_PUBLIC_KEY_FILE=str(tmp_path / "jwt.pub"),
    )
    status, tokens = _login(server, "alice")
    assert status == 200, tokens
    claims = jwt.decode(tokens["access"], public_pem, algorithms=["RS256"])
    assert claims["user_id"] == str(e2e_db.user_ids["alice"])
    await _welcomed(server, tokens["access"])
    assert _refresh(server, tokens["refresh"])[0] == 200

    forged = {**claims, "user_id": str(e2e_db.user_ids["admin"]), "jti": uuid.uuid4().hex}
    for token in (
        mint_token(e2e_db.user_ids["admin"], expires_in=300, key=SECRET_KEY),
        _hs256_with_key(forged, public_pem),
    ):
        code, reason, _ = await expect_close(await connect(server, token))
        assert (code, reason) == (4401, "invalid_token")


# Login throttling -------------------------------------------------------------------------


def test_login_is_throttled_per_username_and_per_address_across_servers(
    server_factory: ServerFactory, tmp_path: Path
) -> None:
    """Hostile clients: password guessing gets HTTP 429 with Retry-After after REALTIME_LOGIN_RATE
    failed attempts for one username, and after REALTIME_LOGIN_ADDRESS_RATE failures from one
    address; two servers on one Redis share the budget (a second server does not double it).
    Correct logins never count: a client that signs in often from one address is not refused."""
    redis = RedisServer(port=free_port(), workdir=tmp_path).start()
    try:
        rates = {"REALTIME_LOGIN_RATE": "3/min", "REALTIME_LOGIN_ADDRESS_RATE": "6/min", "REDIS_URL": redis.url}
        one, two = server_factory(**rates), server_factory(**rates)
        assert [_login(s, "alice", "wrong")[0] for s in (one, two, one)] == [401, 401, 401]
        status, headers, body = http_json(
            "POST", f"{two.http_url}/api/auth/token/", {"username": "alice", "password": PASSWORD}
        )
        assert status == 429, body
        assert int({k.lower(): v for k, v in headers.items()}["retry-after"]) > 0
        # Successful logins from the same address, well past both budgets: none is refused.
        assert [_login(s, "admin")[0] for s in (one, two) * 5] == [200] * 10
        # Failures of another username spend the address's budget (6): then even bob is refused.
        assert [_login(s, "bob", "wrong")[0] for s in (one, two, one)] == [401, 401, 401]
        assert _login(two, "bob")[0] == 429
    finally:
        redis.kill()


# nginx ------------------------------------------------------------------------------------


def test_nginx_logs_no_token_of_websocket_upgrades(server: ServerProcess, tmp_path: Path) -> None:
    """Tokens travel in ?token= on /ws/: the shipped nginx configuration must not write them to its
    access log, while it still logs the request."""
    from tests.e2e.test_nginx import nginx_conf

    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(binary).exists():
        pytest.skip("nginx is not installed (scripts/services.sh installs it)")
    port = free_port()
    conf = nginx_conf(tmp_path, port, [server.port])
    conf.write_text(conf.read_text().replace("/var/log/nginx/", f"{tmp_path}/"))
    proc = subprocess.Popen([binary, "-c", str(conf), "-p", str(tmp_path), "-g", "daemon off;"], cwd=tmp_path)
    try:
        deadline = time.monotonic() + scaled(10)
        while True:
            try:
                if http_json("GET", f"http://127.0.0.1:{port}/healthz")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, (tmp_path / "error.log").read_text()
                time.sleep(0.1)
        token = mint_token(1, expires_in=300)
        request = (
            f"GET /ws/?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        raw_http(port, request)
    finally:
        proc.terminate()
        proc.wait()
    logged = "".join(p.read_text() for p in tmp_path.glob("*access*.log"))
    assert "/ws/" in logged, logged
    assert token not in logged, logged
    assert "token=" not in logged, logged
