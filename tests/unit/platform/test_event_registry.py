"""Issue 20 / issue 16: one registry of client events, checked when declared.

Rules of the registry (fresh :class:`EventRegistry` instances, so the server's own is not
touched), that the server's registry is frozen and the protocol's table is derived from it,
and that the pure protocol session works with a table it is given."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from django.core.exceptions import ImproperlyConfigured
from pydantic import BaseModel

from realtime.client_events import EventRegistry, client_event, protocol_table, registry
from realtime.connection.handlers import HANDLERS
from realtime.protocol.events import CONTRACT_EVENTS, EventSpec, event_table
from realtime.protocol.schemas import ClientData
from realtime.protocol.session import Command, Immediate, ProtocolSession


class Title(ClientData):
    title: str


async def handler(conn: Any, data: Any, ref: str | None) -> dict[str, Any]:
    return {}


async def other(conn: Any, data: Any, ref: str | None) -> dict[str, Any]:
    return {}


def test_a_name_declared_twice_is_refused_naming_both_handlers() -> None:
    """Registry: duplicates raise at import, naming both declarations"""
    events = EventRegistry(required=frozenset())
    events.register("todo.create", handler)
    with pytest.raises(ImproperlyConfigured, match=r"'todo.create' is declared twice: .*other.* and .*handler"):
        events.register("todo.create", other)


@pytest.mark.parametrize("name", ["", "Todo.create", "todo..create", "todo.", ".todo", "todo create", "x" * 65, "ack"])
def test_names_outside_the_event_name_syntax_are_refused(name: str) -> None:
    """Registry: a name that is not dotted lowercase (or is a reply's name) raises at import"""
    with pytest.raises(ImproperlyConfigured, match="client event name"):
        EventRegistry(required=frozenset()).register(name, handler)


def test_a_handler_must_be_async_and_a_schema_a_pydantic_model() -> None:
    """Registry: a sync handler or a schema that is not a model class is refused at import"""

    def sync_handler(conn: Any, data: Any, ref: str | None) -> dict[str, Any]:
        return {}

    events = EventRegistry(required=frozenset())
    with pytest.raises(ImproperlyConfigured, match="must be an async def"):
        events.register("todo.sync", sync_handler)  # type: ignore[arg-type]
    with pytest.raises(ImproperlyConfigured, match="pydantic model class"):
        events.register("todo.dict", handler, schema=dict)  # type: ignore[arg-type]
    assert "todo.sync" not in events
    assert "todo.dict" not in events


def test_freezing_requires_every_contract_event_then_refuses_more() -> None:
    """Registry: a contract event without a handler cannot exist; nothing is added once frozen"""
    events = EventRegistry(required=frozenset({"ping", "echo"}))
    events.register("ping", handler)
    with pytest.raises(ImproperlyConfigured, match="without a handler: echo"):
        events.freeze()
    events.register("echo", handler)
    events.freeze()
    with pytest.raises(ImproperlyConfigured, match="after apps were ready"):
        events.register("todo.late", handler)


def test_the_servers_registry_is_frozen_once_apps_are_ready() -> None:
    """Registry: frozen after ready: a late @client_event raises instead of being ignored"""
    assert registry.frozen
    with pytest.raises(ImproperlyConfigured, match="after apps were ready"):

        @client_event("todo.too_late")
        async def too_late(conn: Any, data: Any, ref: str | None) -> None:
            return None

    assert "todo.too_late" not in protocol_table()


def test_the_protocol_table_is_derived_from_the_handler_table() -> None:
    """Registry: the protocol's table and the handler table are one declaration: same names,
    each spec the declaration's, the contract's events and the test app's alike"""
    table = protocol_table()
    assert set(table) == set(HANDLERS) == set(registry)
    assert set(table) >= CONTRACT_EVENTS
    assert {"todo.create", "todo.purge", "todo.explode"} <= set(table)
    for name, spec in table.items():
        assert registry[name].spec is spec
        assert HANDLERS[name] is registry[name].handler
    assert table["admin.kick"].staff_only
    assert table["todo.purge"].staff_only
    assert not table["message.send"].staff_only
    assert table["todo.create"].idempotent
    assert set(registry.builtin()) >= CONTRACT_EVENTS
    assert "todo.create" not in registry.builtin()


def test_the_tables_are_read_only() -> None:
    with pytest.raises(TypeError):
        protocol_table()["x.y"] = EventSpec("x.y", None)  # type: ignore[index]
    with pytest.raises(TypeError):
        HANDLERS["x.y"] = handler  # type: ignore[index]


def test_event_table_refuses_duplicates_and_spec_refuses_bad_names() -> None:
    """Protocol core: the shape only; a table is built from specs and checked"""
    with pytest.raises(ValueError, match="declared twice"):
        event_table([EventSpec("a.b", None), EventSpec("a.b", Title)])
    with pytest.raises(ValueError, match="dotted lowercase"):
        EventSpec("A.B", None)


def _reply(outcome: Command | Immediate) -> dict[str, Any]:
    assert isinstance(outcome, Immediate)
    parsed: dict[str, Any] = orjson.loads(outcome.reply)
    return parsed


def test_a_pure_protocol_session_uses_only_the_table_it_is_given() -> None:
    """Protocol core: ProtocolSession takes its event table (dependency injection): an event
    outside it is unknown_event, one in it is validated against its schema and staff flag"""
    table = event_table([EventSpec("todo.add", Title), EventSpec("todo.wipe", None, staff_only=True)])
    session = ProtocolSession(table)
    command = session.receive_text('{"event":"todo.add","id":"1","data":{"title":"milk"}}')
    assert isinstance(command, Command)
    assert command.spec is table["todo.add"]
    assert command.data == Title(title="milk")
    assert _reply(session.receive_text('{"event":"ping","id":"2"}'))["data"]["code"] == "unknown_event"
    invalid = _reply(session.receive_text('{"event":"todo.add","id":"3","data":{"title":7}}'))["data"]
    assert invalid["code"] == "validation_error"
    assert invalid["fields"] == {"title": "must be a string"}
    assert invalid["message"] == "data.title: must be a string"
    assert _reply(session.receive_text('{"event":"todo.wipe","id":"4"}'))["data"]["code"] == "forbidden"
    assert isinstance(ProtocolSession(table, is_staff=True).receive_text('{"event":"todo.wipe"}'), Command)


def test_any_pydantic_model_can_be_a_schema() -> None:
    class Loose(BaseModel):
        n: int

    session = ProtocolSession(event_table([EventSpec("n.set", Loose)]))
    command = session.receive_text('{"event":"n.set","data":{"n":"3"}}')
    assert isinstance(command, Command)  # pydantic's own (lax) rules: the model decides
    assert command.data == Loose(n=3)
