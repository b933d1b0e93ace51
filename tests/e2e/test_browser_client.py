"""The browser side: the /demo/ page and ``/static/realtime/client.js`` in real headless Chromium.

Debian's ``/usr/bin/chromium`` is driven by Playwright (``requirements-dev.txt``); no browser is
ever downloaded. A missing Chromium fails these tests with a message, it never skips them
(``scripts/services.sh`` installs it for ``scripts/test.sh`` and CI).

Origins: each test starts its own ``manage.py serve`` on a port picked here (not ``--port 0``),
so that ``REALTIME_ALLOWED_ORIGINS`` can name exactly the page's own origin
``http://127.0.0.1:PORT``: the page's WebSocket passes the real origin check, with no ``*``.

Rows of TEST-PLAN.md covered from a browser: Connection Tests: Connect; Message Tests: Valid
message; Concurrency Tests: Multiple clients, Race conditions; Security Tests: Injection attack
(user text is rendered as text); Fault Tolerance Tests: Server restart, Retry logic.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.async_api import Browser, BrowserContext, Page, async_playwright, expect

from tests.conftest import scaled
from tests.e2e.conftest import E2EDatabase, ServerFactory
from tests.e2e.helpers import (
    PASSWORD,
    ServerProcess,
    base_env,
    call,
    connect,
    http_json,
    mint_token,
    obtain_tokens,
    recv_json,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
UI_TIMEOUT_MS = scaled(10) * 1000


# Servers on a chosen port ---------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class PageServers:
    """Servers whose allowed origin is exactly the page's own ``http://127.0.0.1:PORT``."""

    def __init__(self, database_url: str, log_dir: Path) -> None:
        self.database_url = database_url
        self.log_dir = log_dir
        self.started: list[ServerProcess] = []

    def start(self, **settings: str) -> ServerProcess:
        last: Exception | None = None
        for _ in range(3):  # the picked port may be taken in between: pick another
            port = free_port()
            env = base_env(self.database_url, REALTIME_ALLOWED_ORIGINS=f"http://127.0.0.1:{port}", **settings)
            server = ServerProcess(env=env, log_path=self.log_dir / f"server-{port}.log", port=port)
            try:
                server.start()
            except RuntimeError as exc:
                last = exc
                continue
            return self.track(server)
        raise RuntimeError(f"no server could start: {last}")

    def track(self, server: ServerProcess) -> ServerProcess:
        self.started.append(server)
        return server


@pytest.fixture
def page_servers(e2e_db: E2EDatabase, tmp_path: Path) -> Iterator[PageServers]:
    servers = PageServers(e2e_db.url, tmp_path)
    yield servers
    for server in servers.started:
        server.stop()


# The browser --------------------------------------------------------------------------------------


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package "
            "(`apt-get install chromium`; scripts/services.sh installs it for scripts/test.sh and CI)"
        )
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


@dataclass
class DemoPage:
    page: Page
    context: BrowserContext
    errors: list[str]

    def assert_no_errors(self) -> None:
        assert not self.errors, f"errors in the page: {self.errors}"


# What Chromium itself logs while a server is down is expected; anything else is a bug.
NETWORK_NOISE = ("WebSocket connection to", "Failed to load resource")


def _console(errors: list[str], kind: str, text: str) -> None:
    if kind == "error" and not text.startswith(NETWORK_NOISE):
        errors.append(f"console.error: {text}")


async def open_demo(browser: Browser, server: ServerProcess, query: str = "") -> DemoPage:
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(f"uncaught: {exc}"))
    page.on("console", lambda msg: _console(errors, msg.type, msg.text))
    response = await page.goto(f"{server.http_url}/demo/{query}")
    assert response is not None
    assert response.status == 200
    return DemoPage(page, context, errors)


async def sign_in(demo: DemoPage, username: str) -> None:
    page = demo.page
    await page.fill("#username", username)
    await page.fill("#password", PASSWORD)
    await page.click("#signin")
    await expect(page.locator("#state")).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#state")).to_have_text("open")
    await expect(page.locator("#whoami")).to_have_text(username)


async def send_from_page(page: Page, text: str) -> None:
    await page.fill("#message-input", text)
    await page.press("#message-input", "Enter")


async def message_texts(page: Page) -> list[str]:
    return await page.locator("#messages li .text").all_text_contents()


async def wait_for_texts(page: Page, expected: list[str], timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + scaled(timeout)
    texts = await message_texts(page)
    while texts[-len(expected) :] != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        texts = await message_texts(page)
    assert texts[-len(expected) :] == expected, texts
    return texts


async def offsets(page: Page) -> list[int]:
    values = await page.locator("#messages li").evaluate_all("items => items.map(li => Number(li.dataset.offset))")
    return [int(v) for v in values]


# Tests ---------------------------------------------------------------------------------------------


async def test_demo_page_signs_in_and_messages_reach_other_clients(browser: Browser, page_servers: PageServers) -> None:
    """Connection Tests: Connect; Message Tests: Valid message; Concurrency Tests: Multiple clients;
    Security Tests: Injection attack.

    Alice's page signs in and shows "open"; what she sends appears in Bob's page (another browser
    context) and reaches a Python websockets client; user text is rendered as text, never HTML;
    an announcement shows in both pages' banners.
    """
    server = page_servers.start()
    room = f"web-{uuid.uuid4().hex[:8]}"
    alice = await open_demo(browser, server, f"?room={room}")
    bob = await open_demo(browser, server, f"?room={room}")
    await expect(alice.page.locator("#state")).to_have_attribute("data-state", "signed-out")
    await sign_in(alice, "alice")
    await sign_in(bob, "bob")
    await expect(alice.page.locator("#room-name")).to_have_text(f"room:{room}")

    admin_token = obtain_tokens(server, "admin")["access"]
    ws = await connect(server, admin_token)
    assert (await recv_json(ws))["event"] == "session.welcome"
    ack = await call(ws, {"event": "stream.subscribe", "id": "s1", "data": {"stream": f"room:{room}"}})
    assert ack["event"] == "ack", ack

    # Text without markup is kept exactly (and must show exactly); markup is stripped by the server,
    # and whatever reaches the page is text: no element is ever created from it.
    plain = "Tom & Jerry: 2 < 3 \"quoted\" 'single'"
    await send_from_page(alice.page, plain)
    for page in (alice.page, bob.page):
        await wait_for_texts(page, [plain])
    pushed = await recv_json(ws)
    assert pushed["event"] == "message.new"
    assert pushed["data"]["text"] == plain
    assert pushed["data"]["sender"]["username"] == "alice"
    assert isinstance(pushed["data"]["id"], str)  # the client's idempotency id

    await send_from_page(bob.page, 'hi <img src=x onerror="window.pwned=1"> there')
    pushed = await recv_json(ws)
    assert "<img" not in pushed["data"]["text"]
    for page in (alice.page, bob.page):
        await wait_for_texts(page, [plain, pushed["data"]["text"]])
        assert await page.locator("#messages img, #messages script").count() == 0
        assert await page.evaluate("window.pwned === undefined")

    # A message whose text looks like HTML but is sent by the Python client as literal text.
    literal = "a <3 b & c > d"
    sent = await call(ws, {"event": "message.send", "id": "m1", "data": {"stream": f"room:{room}", "text": literal}})
    assert sent["event"] == "ack", sent
    assert (await recv_json(ws))["data"]["text"] == literal  # its own copy, after the ack
    for page in (alice.page, bob.page):
        await wait_for_texts(page, [literal])

    # Offsets in the page are the stream's, in order, each once.
    assert await offsets(alice.page) == [1, 2, 3]
    assert await offsets(bob.page) == [1, 2, 3]

    announced = await call(ws, {"event": "admin.announce", "id": "a1", "data": {"text": "Maintenance at 5 <soon>"}})
    assert announced["event"] == "ack", announced
    for page in (alice.page, bob.page):
        await expect(page.locator("#announcement")).to_be_visible(timeout=UI_TIMEOUT_MS)
        await expect(page.locator("#announcement-from")).to_have_text("from admin:")
        text = await page.locator("#announcement-text").text_content()
        assert text is not None
        assert text.startswith("Maintenance at 5")
    alice.assert_no_errors()
    bob.assert_no_errors()


async def test_demo_resource_editor_live_updates_and_conflict(browser: Browser, page_servers: PageServers) -> None:
    """Concurrency Tests: Race conditions (two clients update the same resource).

    Alice creates a resource from the page; Bob's REST update reaches her editor live; while she
    edits, Bob saves again, so her save is refused with ``conflict``: the page shows Bob's version
    and data, and saving her text over his version then wins.
    """
    server = page_servers.start()
    alice = await open_demo(browser, server)
    page = alice.page
    await sign_in(alice, "alice")

    await page.fill("#resource-editor", '{"title": "draft", "items": []}')
    await page.click("#resource-create")
    await expect(page.locator("#resource-status")).to_contain_text("created resource", timeout=UI_TIMEOUT_MS)
    resource_id = await page.evaluate("window.realtimeDemo.resource.id")
    assert isinstance(resource_id, int)
    await expect(page.locator("#resource-info")).to_have_text(f"Resource #{resource_id}, version 1")

    bob = {"Authorization": f"Bearer {obtain_tokens(server, 'bob')['access']}"}
    url = f"{server.http_url}/api/resources/{resource_id}/"
    status, _, body = http_json("PUT", url, {"version": 1, "data": {"title": "bob's", "n": 1}}, bob)
    assert status == 200, body
    # Live: the editor (unedited) follows resource:ID.
    await expect(page.locator("#resource-info")).to_have_text(
        f"Resource #{resource_id}, version 2", timeout=UI_TIMEOUT_MS
    )
    assert orjson.loads(await page.input_value("#resource-editor")) == {"title": "bob's", "n": 1}
    await expect(page.locator("#resource-status")).to_contain_text("by bob")

    # Alice edits; Bob saves version 3 meanwhile; her save at version 2 conflicts.
    await page.fill("#resource-editor", '{"title": "alice\'s", "n": 2}')
    await expect(page.locator("#resource-info")).to_contain_text("(edited)")
    status, _, body = http_json("PUT", url, {"version": 2, "data": {"title": "bob again", "n": 3}}, bob)
    assert status == 200, body
    await expect(page.locator("#resource-remote")).to_contain_text("bob saved version 3", timeout=UI_TIMEOUT_MS)
    await page.click("#resource-save")
    await expect(page.locator("#conflict")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.locator("#conflict-version")).to_have_text("3")
    conflict_data = await page.locator("#conflict-data").text_content()
    assert conflict_data is not None
    assert orjson.loads(conflict_data) == {"title": "bob again", "n": 3}
    await expect(page.locator("#resource-status")).to_contain_text("conflict")
    # Her text is still in the editor, unsaved.
    assert orjson.loads(await page.input_value("#resource-editor")) == {"title": "alice's", "n": 2}

    # Keep her edit on top of version 3, save: version 4 is hers.
    await page.click("#conflict-keep")
    await expect(page.locator("#conflict")).to_be_hidden()
    await page.click("#resource-save")
    await expect(page.locator("#resource-status")).to_have_text("saved version 4", timeout=UI_TIMEOUT_MS)
    status, _, body = http_json("GET", url, headers=bob)
    assert status == 200
    assert body["version"] == 4
    assert body["data"] == {"title": "alice's", "n": 2}
    assert body["updated_by"]["username"] == "alice"

    # Another conflict, resolved the other way: load Bob's version.
    status, _, body = http_json("PUT", url, {"version": 4, "data": {"title": "bob wins"}}, bob)
    assert status == 200, body
    await expect(page.locator("#resource-info")).to_have_text(
        f"Resource #{resource_id}, version 5", timeout=UI_TIMEOUT_MS
    )
    await page.evaluate("window.realtimeDemo.resource.version = 4")  # as if the push had not arrived yet
    await page.fill("#resource-editor", '{"title": "stale"}')
    await page.click("#resource-save")
    await expect(page.locator("#conflict-version")).to_have_text("5", timeout=UI_TIMEOUT_MS)
    await page.click("#conflict-reload")
    await expect(page.locator("#conflict")).to_be_hidden()
    assert orjson.loads(await page.input_value("#resource-editor")) == {"title": "bob wins"}
    await expect(page.locator("#resource-info")).to_have_text(f"Resource #{resource_id}, version 5")
    alice.assert_no_errors()


async def test_demo_page_reconnects_after_server_restart_without_loss(
    browser: Browser, page_servers: PageServers, server_factory: ServerFactory
) -> None:
    """Fault Tolerance Tests: Server restart (and Retry logic across it).

    The server process under the page is stopped (SIGTERM: the page sees 1012) and a new one is
    started on the same port with the same database. While it is down, Bob publishes through
    another server process, and Alice sends from the page. After the page reconnects it has every
    message once, in offset order: the outage's by replay from its last offset, hers by the retry
    of the un-acked call with the same id (stored once).

    The page is opened with ``backoff_max=2000`` so the reconnect comes within 2 s of the restart.
    """
    server = page_servers.start()
    other = server_factory()  # same database, its own port: publishes while the page's server is down
    room = f"restart-{uuid.uuid4().hex[:8]}"
    alice = await open_demo(browser, server, f"?room={room}&backoff_max=2000")
    page = alice.page
    await sign_in(alice, "alice")
    await send_from_page(page, "before restart")
    await wait_for_texts(page, ["before restart"])
    await page.evaluate(
        """() => {
            window.stateLog = [];
            const client = window.realtimeDemo.client;
            client.onStateChange((old, now) => {
                const close = client.lastClose;
                window.stateLog.push([now, close ? close.code : null, close ? close.reason : null]);
            });
        }"""
    )

    assert server.stop() == 0
    await expect(page.locator("#state")).to_have_attribute("data-state", "reconnecting", timeout=UI_TIMEOUT_MS)
    state_log: list[Any] = await page.evaluate("window.stateLog")
    assert state_log[0] == ["reconnecting", 1012, "service_restart"], state_log

    # During the outage: Alice sends (her call waits for a connection), Bob publishes elsewhere.
    await send_from_page(page, "sent during outage")
    await expect(page.locator("#send-status")).to_have_text("sending 1…")
    ws = await connect(other, obtain_tokens(other, "bob")["access"])
    assert (await recv_json(ws))["event"] == "session.welcome"
    for n in range(1, 4):
        frame = {"event": "message.send", "id": f"out-{n}", "data": {"stream": f"room:{room}", "text": f"outage {n}"}}
        reply = await call(ws, frame)
        assert reply["event"] == "ack", reply

    restarted = page_servers.track(server.restarted())
    assert restarted.port == server.port
    await expect(page.locator("#state")).to_have_attribute("data-state", "open", timeout=UI_TIMEOUT_MS)
    texts = await wait_for_texts(page, ["outage 1", "outage 2", "outage 3", "sent during outage"])
    assert texts == ["before restart", "outage 1", "outage 2", "outage 3", "sent during outage"]
    assert await offsets(page) == [1, 2, 3, 4, 5]
    await expect(page.locator("#send-status")).to_have_text("")
    assert (await page.evaluate("window.stateLog"))[-1][0] == "open"

    # Stored once: the retried call kept its id.
    history = await call(ws, {"event": "stream.history", "id": "h", "data": {"stream": f"room:{room}", "since": 0}})
    stored = [event["data"]["text"] for event in history["data"]["events"]]
    assert stored == texts
    alice.assert_no_errors()


CLIENT_SCENARIOS = """
async ({ wsUrl, token, freshToken, shortToken, expiringToken, forgedToken, room }) => {
  const { RealtimeClient, RealtimeError, Backoff, closeAction } = await import("/static/realtime/client.js");
  const results = {};
  const until = async (check, what, ms = 10000) => {
    const deadline = performance.now() + ms;
    while (!check()) {
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${what()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  // A WebSocket that records what the client sends and can lose frames the server sent.
  const lossy = (drop, log) => class extends WebSocket {
    send(data) { log.push(JSON.parse(data)); super.send(data); }
    set onmessage(handler) {
      super.onmessage = (ev) => { if (!drop(JSON.parse(ev.data))) handler.call(this, ev); };
    }
    get onmessage() { return super.onmessage; }
  };

  // Tokens, meanwhile (they are short-lived): 4401 token_expired -> tokenProvider -> reconnect;
  // auth.expiring -> auth.refresh.
  const expired = (async () => {
    const states = [];
    let asked = 0;
    const client = new RealtimeClient(wsUrl, {
      token: shortToken, refreshOnExpiring: false, tokenProvider: async () => { asked += 1; return freshToken; },
    });
    client.onStateChange((_old, now) => states.push([now, client.lastClose && client.lastClose.reason]));
    await client.connect();
    await until(
      () => client.connections === 2 && client.state === "open",
      () => `a reconnect, states ${JSON.stringify(states)} ${JSON.stringify(client.lastClose)}`,
    );
    client.close();
    return { states, asked, token: client.token === freshToken };
  })();
  const refreshed = (async () => {
    const client = new RealtimeClient(wsUrl, { token: expiringToken, tokenProvider: () => freshToken });
    const pushes = [];
    client.onPush((f) => pushes.push(f.event));
    await client.connect();
    await new Promise((r) => setTimeout(r, 5500)); // past the first token's expiry
    const result = { pushes, connections: client.connections, state: client.state };
    client.close();
    return result;
  })();

  // Pure parts: full-jitter bounds and the close policy.
  const backoff = new Backoff(500, 10000, 2, () => 1);
  results.ceilings = [0, 1, 2, 3, 4, 5, 6].map(() => backoff.nextDelay());
  results.policy = [
    [1012, "service_restart"], [1013, "slow_consumer"], [1000, null], [4401, "invalid_token"],
    [4401, "token_expired"], [4403, "kicked"], [4408, "idle_timeout"], [null, null],
  ].map(([c, r]) => closeAction(c, r, { hasTokenProvider: true, reconnectOnIdle: false }));

  // Retry logic: the first ack of a call is lost; the call is sent again with the same id.
  {
    const sent = [];
    let lose = true;
    const Lossy = lossy((f) => lose && f.event === "ack" && f.ref === "retry-1" && !(lose = false), sent);
    const client = new RealtimeClient(wsUrl, { token, ackTimeout: 500, WebSocket: Lossy });
    await client.connect();
    const started = performance.now();
    const ack = await client.call("echo", { x: 1 }, { id: "retry-1" });
    results.retry = {
      ack, elapsed: performance.now() - started, sends: sent.filter((f) => f.id === "retry-1").length,
    };
    client.close();
    results.retry.afterClose = await client.call("echo", {}).catch((e) => e instanceof RealtimeError && e.code);
  }

  // Gap filling: a push is lost; the reorder buffer holds the next one and fills from history.
  {
    const stream = `room:${room}`;
    let lose = true;
    const Lossy = lossy((f) => lose && f.event === "message.new" && f.offset === 2 && !(lose = false), []);
    const client = new RealtimeClient(wsUrl, { token, WebSocket: Lossy });
    await client.connect();
    const got = [];
    const sub = client.subscribe(stream, { onEvent: (f) => got.push([f.offset, f.data.text]) });
    await sub.ready;
    for (const text of ["a", "b", "c"]) await client.call("message.send", { stream, text });
    await until(() => got.length >= 3, () => `3 events, got ${JSON.stringify(got)}`);
    results.gap = { got, fills: sub.fills, lastOffset: sub.lastOffset };
    client.close();
  }

  // Flow control: far more calls than the rate limit's burst; the client waits on flow.pause.
  {
    const client = new RealtimeClient(wsUrl, { token });
    await client.connect();
    const acks = await Promise.all(Array.from({ length: 150 }, (_, i) => client.call("echo", { i })));
    results.flow = {
      inOrder: acks.every((a, i) => a.i === i), pauses: client.pauses, connections: client.connections,
      state: client.state, lastClose: client.lastClose,
    };
    client.close();
  }

  [results.expired, results.refreshed] = await Promise.all([expired, refreshed]);

  // Stop for good on invalid_token / missing_token: no reconnect.
  for (const [name, bad] of [["forged", forgedToken], ["missing", null]]) {
    const states = [];
    const client = new RealtimeClient(wsUrl, { token: bad });
    client.onStateChange((_old, now) => states.push(now));
    const error = await client.connect().then(() => null, (e) => e instanceof RealtimeError && e.code);
    results[name] = { error, states, closeCode: client.closeError && client.closeError.data.close_code };
  }
  return results;
}
"""


async def test_client_module_behaviours_in_the_browser(
    browser: Browser, page_servers: PageServers, e2e_db: E2EDatabase
) -> None:
    """Fault Tolerance Tests: Retry logic; Ordering Tests: Message sequence (gap filled from
    history); Backpressure Tests: Flow control; Security Tests: Token expiration, Invalid token,
    No auth token: ``client.js`` itself, imported by a page, against a real server.

    Lost frames are simulated by a WebSocket subclass passed as the client's ``WebSocket`` option.
    The server runs with ``REALTIME_RATE_LIMIT=50`` so 150 calls at once meet ``flow.pause``.
    """
    server = page_servers.start(REALTIME_RATE_LIMIT="50")
    alice_id = e2e_db.user_ids["alice"]
    context = await browser.new_context()
    page = await context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(f"{server.http_url}/healthz")  # any page of the server's origin
    results = await page.evaluate(
        CLIENT_SCENARIOS,
        {
            "wsUrl": "/ws/",
            "token": obtain_tokens(server, "alice")["access"],
            "freshToken": obtain_tokens(server, "alice")["access"],
            "shortToken": mint_token(alice_id, expires_in=3),
            "expiringToken": mint_token(alice_id, expires_in=4),
            "forgedToken": mint_token(alice_id, expires_in=300, key="not-the-server-key-0123456789abcdef"),
            "room": f"js-{uuid.uuid4().hex[:8]}",
        },
    )
    assert results["ceilings"] == [500, 1000, 2000, 4000, 8000, 10000, 10000]
    assert results["policy"] == [
        "reconnect", "reconnect", "stop", "stop", "refresh_token", "stop", "stop", "reconnect",
    ]  # fmt: skip
    retry = results["retry"]
    assert retry["ack"] == {"x": 1}
    assert retry["sends"] == 2
    assert 500 <= retry["elapsed"] < 500 + scaled(2) * 1000
    assert retry["afterClose"] == "closed"
    assert results["gap"] == {"got": [[1, "a"], [2, "b"], [3, "c"]], "fills": 1, "lastOffset": 3}
    flow = results["flow"]
    assert flow["inOrder"] is True
    assert flow["pauses"] >= 1
    assert (flow["connections"], flow["state"], flow["lastClose"]) == (1, "open", None), flow
    expired = results["expired"]
    assert expired["asked"] == 1
    assert expired["token"] is True
    assert expired["states"] == [
        ["open", None],
        ["reconnecting", "token_expired"],
        ["open", "token_expired"],
        ["closed", "token_expired"],  # close() at the end
    ]
    refreshed = results["refreshed"]
    assert "auth.expiring" in refreshed["pushes"]
    assert refreshed["connections"] == 1
    assert refreshed["state"] == "open"
    assert results["forged"] == {"error": "invalid_token", "states": ["closed"], "closeCode": 4401}
    assert results["missing"] == {"error": "missing_token", "states": ["closed"], "closeCode": 4401}
    assert not errors, errors
