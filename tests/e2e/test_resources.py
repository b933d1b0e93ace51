"""Resources with optimistic concurrency over WebSocket and REST, against a real server
(PROTOCOL.md section 7): concurrent updates at one version, conflicts, pushes, REST shapes."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
from websockets.asyncio.client import ClientConnection

from tests.e2e.conftest import E2EDatabase
from tests.e2e.helpers import ServerProcess, call, connect, http_json, mint_token, recv_json


def _uid(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def _token(e2e_db: E2EDatabase, username: str) -> str:
    return mint_token(e2e_db.user_ids[username], expires_in=600)


def _rest(
    server: ServerProcess, method: str, path: str, token: str | None, body: Any = None
) -> tuple[int, dict[str, str], Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    return http_json(method, f"{server.http_url}{path}", body, headers)


def _user(e2e_db: E2EDatabase, username: str) -> dict[str, Any]:
    return {"id": e2e_db.user_ids[username], "username": username}


async def _login(server: ServerProcess, e2e_db: E2EDatabase, username: str) -> ClientConnection:
    ws = await connect(server, _token(e2e_db, username))
    welcome = await recv_json(ws)
    assert welcome["event"] == "session.welcome", welcome
    return ws


def _create(server: ServerProcess, e2e_db: E2EDatabase, data: dict[str, Any], username: str = "alice") -> int:
    status, _, body = _rest(server, "POST", "/api/resources/", _token(e2e_db, username), {"data": data})
    assert status == 201, body
    rid: int = body["id"]
    return rid


async def _watch(server: ServerProcess, e2e_db: E2EDatabase, rid: int) -> ClientConnection:
    ws = await _login(server, e2e_db, "admin")
    reply = await call(ws, {"event": "stream.subscribe", "data": {"stream": f"resource:{rid}"}})
    assert reply["event"] == "ack", reply
    assert (reply["data"]["offset"], reply["data"]["recovered"]) == (0, True)
    return ws


def _update_frame(rid: int, version: int, data: dict[str, Any], ref: str) -> str:
    return orjson.dumps(
        {"event": "resource.update", "id": ref, "data": {"id": rid, "version": version, "data": data}}
    ).decode()


async def _race(clients: list[ClientConnection], rid: int, version: int) -> list[tuple[str, dict[str, Any]]]:
    """Every client sends an update at ``version`` at once; returns (ref, reply) per client."""
    refs = [_uid(f"c{i}") for i in range(len(clients))]
    frames = [_update_frame(rid, version, {"writer": i}, refs[i]) for i in range(len(clients))]
    await asyncio.gather(*(ws.send(frame) for ws, frame in zip(clients, frames, strict=True)))
    replies = await asyncio.gather(*(recv_json(ws) for ws in clients))
    for ref, reply in zip(refs, replies, strict=True):
        assert reply["ref"] == ref, reply
    return list(zip(refs, replies, strict=True))


def _check_one_winner(outcome: list[tuple[str, dict[str, Any]]], rid: int, version: int) -> tuple[int, dict[str, Any]]:
    """Exactly one ack (version + 1); every other reply a conflict naming the winner's version and data."""
    winners = [i for i, (_, reply) in enumerate(outcome) if reply["event"] == "ack"]
    assert len(winners) == 1, outcome
    winner = winners[0]
    assert outcome[winner][1]["data"] == {"id": rid, "version": version + 1}
    winner_data = {"writer": winner}
    for i, (_, reply) in enumerate(outcome):
        if i == winner:
            continue
        assert reply["event"] == "error", reply
        data = reply["data"]
        assert data["code"] == "conflict", reply
        assert (data["current_version"], data["current_data"]) == (version + 1, winner_data), reply
    return winner, winner_data


async def test_two_clients_update_at_once_one_wins(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Race conditions -> two clients update one resource at the same version at once: exactly one
    ack, the other conflict with current_version/current_data; resource.updated is pushed once."""
    rid = _create(server, e2e_db, {"title": "draft"})
    watcher = await _watch(server, e2e_db, rid)
    names = ["alice", "bob"]
    clients = [await _login(server, e2e_db, name) for name in names]

    winner, winner_data = _check_one_winner(await _race(clients, rid, 1), rid, 1)
    pushed = await recv_json(watcher)
    assert pushed == {
        "event": "resource.updated",
        "stream": f"resource:{rid}",
        "offset": 1,
        "data": {"id": rid, "version": 2, "data": winner_data, "updated_by": _user(e2e_db, names[winner])},
    }

    # The loser reloads and retries on the current version: that one is accepted.
    loser = clients[1 - winner]
    current = await call(loser, {"event": "resource.get", "id": "g", "data": {"id": rid}})
    assert current == {"event": "ack", "ref": "g", "data": {"id": rid, "version": 2, "data": winner_data}}
    retry = await call(loser, _update_frame(rid, 2, {"writer": "retry"}, _uid("retry")))
    assert (retry["event"], retry["data"]) == ("ack", {"id": rid, "version": 3})
    # The next push is the retry: the race was pushed exactly once.
    pushed = await recv_json(watcher)
    assert (pushed["offset"], pushed["data"]["version"], pushed["data"]["data"]) == (2, 3, {"writer": "retry"})


async def test_ten_clients_update_at_once_one_wins(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Race conditions -> N=10 clients update one resource at the same version at once: exactly one
    ack, nine conflicts naming the winner; one resource.updated; repeated over three versions."""
    rid = _create(server, e2e_db, {"n": 0})
    watcher = await _watch(server, e2e_db, rid)
    names = [("alice", "bob", "admin")[i % 3] for i in range(10)]
    clients = [await _login(server, e2e_db, name) for name in names]
    for version in (1, 2, 3):
        winner, winner_data = _check_one_winner(await _race(clients, rid, version), rid, version)
        pushed = await recv_json(watcher)
        assert (pushed["event"], pushed["offset"]) == ("resource.updated", version)
        assert pushed["data"] == {
            "id": rid,
            "version": version + 1,
            "data": winner_data,
            "updated_by": _user(e2e_db, names[winner]),
        }
    status, _, body = _rest(server, "GET", f"/api/resources/{rid}/", _token(e2e_db, "bob"))
    assert (status, body["version"]) == (200, 4)
    # Nothing else was pushed: the next frame is the next update's.
    status, _, body = _rest(server, "PUT", f"/api/resources/{rid}/", _token(e2e_db, "bob"), {"version": 4, "data": {}})
    assert status == 200, body
    assert (await recv_json(watcher))["offset"] == 4


async def test_rest_and_websocket_updates_race(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Race conditions -> concurrent REST PUTs (and a WebSocket update) at one version: exactly one
    succeeds, the REST losers get 409 {"code":"conflict","current_version","current_data"}."""
    rid = _create(server, e2e_db, {"n": 0})
    watcher = await _watch(server, e2e_db, rid)
    ws = await _login(server, e2e_db, "alice")
    tokens = [_token(e2e_db, name) for name in ("alice", "bob", "admin", "bob", "alice")]
    ref = _uid("ws")

    async def rest_put(i: int) -> tuple[int, dict[str, str], Any]:
        body = {"version": 1, "data": {"writer": f"rest{i}"}}
        return await asyncio.to_thread(_rest, server, "PUT", f"/api/resources/{rid}/", tokens[i], body)

    async def ws_update() -> dict[str, Any]:
        return await call(ws, _update_frame(rid, 1, {"writer": "ws"}, ref))

    rest_results, ws_reply = await asyncio.gather(
        asyncio.gather(*(rest_put(i) for i in range(len(tokens)))), ws_update()
    )
    rest_wins = [body for status, _, body in rest_results if status == 200]
    ws_won = ws_reply["event"] == "ack"
    assert len(rest_wins) + int(ws_won) == 1, (rest_results, ws_reply)
    winner_data = {"writer": "ws"} if ws_won else rest_wins[0]["data"]
    for status, _, body in rest_results:
        if status != 200:
            assert status == 409, body
            assert body == {"code": "conflict", "current_version": 2, "current_data": winner_data}
        else:
            assert body["version"] == 2
            assert set(body) == {"id", "version", "data", "updated_by"}
    if not ws_won:
        assert ws_reply["data"]["code"] == "conflict"
        assert (ws_reply["data"]["current_version"], ws_reply["data"]["current_data"]) == (2, winner_data)
    pushed = await recv_json(watcher)
    assert (pushed["offset"], pushed["data"]["version"], pushed["data"]["data"]) == (1, 2, winner_data)


async def test_rest_resources_follow_the_contract(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Race conditions -> REST POST/GET/list/PUT shapes (section 7), stale PUT is 409 with the
    current state, PUT publishes resource.updated to WebSocket subscribers."""
    token = _token(e2e_db, "alice")
    status, _, created = _rest(server, "POST", "/api/resources/", token, {"data": {"title": "a", "tags": [1, 2]}})
    assert status == 201, created
    rid = created["id"]
    assert isinstance(rid, int)
    assert created == {
        "id": rid,
        "version": 1,
        "data": {"title": "a", "tags": [1, 2]},
        "updated_by": _user(e2e_db, "alice"),
    }

    status, _, body = _rest(server, "GET", f"/api/resources/{rid}/", _token(e2e_db, "bob"))
    assert (status, body) == (200, created)

    status, _, page = _rest(server, "GET", "/api/resources/", token)
    assert status == 200, page
    assert {"count", "next", "previous", "results"} <= set(page)
    assert page["count"] >= 1
    status, _, page = _rest(server, "GET", f"/api/resources/?limit=5&offset={max(page['count'] - 5, 0)}", token)
    assert status == 200, page
    assert created in page["results"]
    for item in page["results"]:
        assert set(item) == {"id", "version", "data", "updated_by"}

    watcher = await _watch(server, e2e_db, rid)
    status, _, body = _rest(
        server, "PUT", f"/api/resources/{rid}/", _token(e2e_db, "bob"), {"version": 1, "data": {"title": "b"}}
    )
    assert (status, body) == (
        200,
        {"id": rid, "version": 2, "data": {"title": "b"}, "updated_by": _user(e2e_db, "bob")},
    )
    pushed = await recv_json(watcher)
    assert pushed == {"event": "resource.updated", "stream": f"resource:{rid}", "offset": 1, "data": body}

    status, _, stale = _rest(server, "PUT", f"/api/resources/{rid}/", token, {"version": 1, "data": {"title": "late"}})
    assert (status, stale) == (409, {"code": "conflict", "current_version": 2, "current_data": {"title": "b"}})
    status, _, body = _rest(server, "GET", f"/api/resources/{rid}/", token)
    assert (status, body["version"], body["data"]) == (200, 2, {"title": "b"})

    # WebSocket reads see the same state; a stale WebSocket update conflicts the same way.
    ws = await _login(server, e2e_db, "alice")
    assert (await call(ws, {"event": "resource.get", "data": {"id": rid}}))["data"] == {
        "id": rid,
        "version": 2,
        "data": {"title": "b"},
    }
    reply = await call(ws, _update_frame(rid, 1, {"title": "ws late"}, _uid("late")))
    assert reply["data"] == {
        "code": "conflict",
        "message": reply["data"]["message"],
        "current_version": 2,
        "current_data": {"title": "b"},
    }


async def test_unknown_resources_and_missing_tokens(server: ServerProcess, e2e_db: E2EDatabase) -> None:
    """Concurrency: Race conditions -> unknown ids are not_found (WebSocket) / 404 (REST); REST without or with a
    bad token is 401; a bad body is 400."""
    token = _token(e2e_db, "alice")
    rid = _create(server, e2e_db, {"k": "v"})
    unknown = 2_000_000_000
    ws = await _login(server, e2e_db, "alice")
    reply = await call(ws, {"event": "resource.get", "id": "nf", "data": {"id": unknown}})
    assert (reply["event"], reply["ref"], reply["data"]["code"]) == ("error", "nf", "not_found")
    reply = await call(ws, _update_frame(unknown, 1, {}, _uid("nf")))
    assert reply["data"]["code"] == "not_found"
    reply = await call(ws, {"event": "resource.update", "data": {"id": rid, "version": "1", "data": {}}})
    assert (reply["data"]["code"], set(reply["data"]["fields"])) == ("validation_error", {"version"})
    reply = await call(ws, {"event": "resource.get", "data": {}})
    assert reply["data"]["fields"] == {"id": "required"}

    assert _rest(server, "GET", f"/api/resources/{unknown}/", token)[0] == 404
    assert _rest(server, "PUT", f"/api/resources/{unknown}/", token, {"version": 1, "data": {}})[0] == 404
    assert _rest(server, "PUT", f"/api/resources/{rid}/", token, {"data": {}})[0] == 400
    assert _rest(server, "POST", "/api/resources/", token, {"data": "not an object"})[0] == 400

    forged = mint_token(e2e_db.user_ids["alice"], expires_in=600, key="another-key-0123456789abcdef0123456789")
    expired = mint_token(e2e_db.user_ids["alice"], expires_in=-10)
    for bad in (None, forged, expired, "garbage"):
        assert _rest(server, "GET", "/api/resources/", bad)[0] == 401
        assert _rest(server, "GET", f"/api/resources/{rid}/", bad)[0] == 401
        assert _rest(server, "POST", "/api/resources/", bad, {"data": {}})[0] == 401
        assert _rest(server, "PUT", f"/api/resources/{rid}/", bad, {"version": 1, "data": {"x": 1}})[0] == 401
    # None of the refused writes changed anything.
    status, _, body = _rest(server, "GET", f"/api/resources/{rid}/", token)
    assert (status, body["version"], body["data"]) == (200, 1, {"k": "v"})
