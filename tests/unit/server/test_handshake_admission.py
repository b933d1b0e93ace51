"""Issue 19: at most ``handshake_slots`` WebSocket handshakes in the application at a time.

Driven in memory (``fakes.py``): upgrade requests beyond the slots wait, in order, with
their head read; a slot is freed when the application answers (accept or refusal) or the
connection is lost, and goes to the next waiting request on the next loop iteration.
"""

from __future__ import annotations

import asyncio
import gc
import weakref
from typing import Any

from realtime.server.http import HttpConnection
from realtime.server.state import Admission, ServerState
from tests.unit.server.fakes import FakeTransport, connect, make_state, settle, upgrade_request

Scope = dict[str, Any]


class Gatekeeper:
    """Answers each handshake when the test says: ``answer(i)`` accepts the i-th, ``refuse(i)`` closes it."""

    def __init__(self) -> None:
        self.scopes: list[Scope] = []
        self.answers: list[asyncio.Future[bool]] = []

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        self.scopes.append(scope)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.answers.append(answer)
        await receive()
        await send({"type": "websocket.accept"} if await answer else {"type": "websocket.close"})
        while (await receive())["type"] != "websocket.disconnect":
            pass

    def answer(self, index: int, accept: bool = True) -> None:
        self.answers[index].set_result(accept)


def upgrade(state: ServerState, rest: bytes = b"") -> FakeTransport:
    transport = FakeTransport()
    connect(HttpConnection(state), transport)
    transport.protocol.data_received(upgrade_request() + rest)
    return transport


async def test_upgrades_beyond_the_slots_wait_in_order_until_a_handshake_is_answered() -> None:
    """Issue 19: with 2 slots, a third and fourth upgrade reach the app only as earlier ones are answered."""
    app = Gatekeeper()
    state = make_state(app, handshake_slots=2)
    transports = [upgrade(state) for _ in range(4)]
    await settle(10)
    assert len(app.scopes) == 2
    assert [t.written for t in transports] == [b""] * 4
    assert len(state.admission.waiting) == 2
    app.answer(0)
    await settle(10)
    assert transports[0].written.startswith(b"HTTP/1.1 101 ")
    assert len(app.scopes) == 3  # the slot went to the next in line
    assert transports[2].written == b""
    app.answer(1, accept=False)  # a refusal frees a slot too
    await settle(10)
    assert transports[1].written.startswith(b"HTTP/1.1 403 ")
    assert len(app.scopes) == 4
    app.answer(2)
    app.answer(3)
    await settle(10)
    assert all(t.written.startswith(b"HTTP/1.1 101 ") for t in (transports[2], transports[3]))
    assert not state.admission.active
    assert not state.admission.waiting


async def test_a_waiting_upgrade_keeps_what_followed_its_head() -> None:
    """Issue 19: bytes read with or after a waiting upgrade's head reach the WebSocket connection."""
    app = Gatekeeper()
    state = make_state(app, handshake_slots=1)
    upgrade(state)
    second = upgrade(state, rest=b"\x81")
    await settle(10)
    waiting = state.admission.waiting[0]
    assert isinstance(waiting, HttpConnection)
    waiting.data_received(b"\x80")
    assert waiting.upgrade_rest == bytearray(b"\x81\x80")
    app.answer(0)
    await settle(10)
    assert len(app.scopes) == 2
    assert second.protocol is not waiting  # handed over to the WebSocket connection
    assert second.reading


async def test_lost_connections_free_their_slot_and_lose_their_place() -> None:
    """Issue 19: a connection lost during its handshake frees the slot; one lost while waiting is skipped."""
    app = Gatekeeper()
    state = make_state(app, handshake_slots=1)
    first = upgrade(state)
    second = upgrade(state)
    third = upgrade(state)
    await settle(10)
    second.close()  # gives up while waiting
    first.close()  # lost before the app answered
    await settle(10)
    assert len(app.scopes) == 2  # the third got the slot, the second was skipped
    app.answer(1)
    await settle(10)
    assert third.written.startswith(b"HTTP/1.1 101 ")
    assert second.written == b""


async def test_no_slot_is_held_while_a_request_head_is_still_arriving() -> None:
    """Issue 19: a client that has not sent its whole head holds no slot (its header timeout applies)."""
    app = Gatekeeper()
    state = make_state(app, handshake_slots=1, header_timeout=0.05)
    slow = FakeTransport()
    connect(HttpConnection(state), slow)
    slow.protocol.data_received(upgrade_request()[:30])
    fast = upgrade(state)
    await settle(10)
    assert len(app.scopes) == 1
    app.answer(0)
    await settle(10)
    assert fast.written.startswith(b"HTTP/1.1 101 ")
    await asyncio.sleep(0.1)
    assert slow.written.startswith(b"HTTP/1.1 408 ")


async def test_admission_bookkeeping() -> None:
    """Issue 19: Admission alone: free while under the slots and nobody waits; 0 slots is no limit."""

    class Waiter:
        def __init__(self, admission: Admission) -> None:
            self.admission = admission
            self.times = 0

        def admitted(self) -> None:
            self.times += 1
            self.admission.hold(self)

    admission = Admission(1, asyncio.get_running_loop())
    assert admission.free()
    holder = object()
    admission.hold(holder)
    assert not admission.free()
    waiter = Waiter(admission)
    admission.wait(waiter)
    admission.leave(object())  # not holding a slot: nothing changes
    await settle()
    assert waiter.times == 0
    admission.leave(holder)
    assert not admission.free()  # the waiter goes first, on the next iteration
    await settle()
    assert waiter.times == 1
    assert admission.active == {waiter}
    unlimited = Admission(0, asyncio.get_running_loop())
    for _ in range(3):
        unlimited.hold(object())
    assert unlimited.free()


async def test_a_handed_over_connection_is_freed_without_the_collector() -> None:
    """Issue 19: once handed over (at once or after waiting), the HTTP connection is in no
    reference cycle, so a collect-and-freeze tick that froze it while it waited cannot keep it."""
    app = Gatekeeper()
    state = make_state(app, handshake_slots=1)
    gc.disable()
    try:
        first, second = FakeTransport(), FakeTransport()
        connections = [HttpConnection(state), HttpConnection(state)]
        refs = [weakref.ref(connection) for connection in connections]
        for connection, transport in zip(connections, (first, second), strict=True):
            connect(connection, transport)
            connection.data_received(upgrade_request())
        del connection, connections
        await settle(10)
        assert refs[0]() is None  # handed over at once
        assert refs[1]() is not None  # waiting for the slot
        app.answer(0)
        await settle(10)
        assert refs[1]() is None
    finally:
        gc.enable()
