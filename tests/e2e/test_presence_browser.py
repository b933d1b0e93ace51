"""The demo page shows who is in the room and who is typing (issue 17), in real headless Chromium."""

from __future__ import annotations

import uuid

from playwright.async_api import Browser, expect

from tests.e2e.helpers import call, connect, obtain_tokens, recv_json
from tests.e2e.test_browser_client import (  # noqa: F401  (browser and page_servers are fixtures)
    UI_TIMEOUT_MS,
    PageServers,
    browser,
    open_demo,
    page_servers,
    sign_in,
)


async def test_demo_page_shows_members_and_who_is_typing(browser: Browser, page_servers: PageServers) -> None:  # noqa: F811
    """Issue 17, demo: alice's and bob's pages list both members (and a third member who joins from
    a Python client); typing in bob's page shows "bob is typing…" in alice's page, and it goes
    once he sends; when the third member leaves, the list drops them."""
    server = page_servers.start()
    room = f"presence-{uuid.uuid4().hex[:8]}"
    alice = await open_demo(browser, server, f"?room={room}")
    bob = await open_demo(browser, server, f"?room={room}")
    await sign_in(alice, "alice")
    await sign_in(bob, "bob")
    for demo in (alice, bob):
        await expect(demo.page.locator("#members .member")).to_have_text(["alice", "bob"], timeout=UI_TIMEOUT_MS)
    await expect(alice.page.locator("#announcement")).to_be_hidden()  # no empty banner before any announcement

    ws = await connect(server, obtain_tokens(server, "admin")["access"])
    assert (await recv_json(ws))["event"] == "session.welcome"
    ack = await call(ws, {"event": "stream.subscribe", "id": "s1", "data": {"stream": f"room:{room}"}})
    assert ack["event"] == "ack", ack
    await expect(alice.page.locator("#members .member")).to_have_text(["admin", "alice", "bob"], timeout=UI_TIMEOUT_MS)

    await bob.page.locator("#message-input").press_sequentially("hel")
    await expect(alice.page.locator("#typing")).to_have_text("bob is typing…", timeout=UI_TIMEOUT_MS)
    await expect(bob.page.locator("#typing")).to_have_text("")
    await bob.page.press("#message-input", "Enter")
    await expect(alice.page.locator("#typing")).to_have_text("", timeout=UI_TIMEOUT_MS)

    await ws.close()
    await expect(alice.page.locator("#members .member")).to_have_text(["alice", "bob"], timeout=UI_TIMEOUT_MS)
    alice.assert_no_errors()
    bob.assert_no_errors()
