"""Issue 16: stream namespaces declared in Python: registry rules, the parse the protocol
core does with the declared syntax, and publish() refusing unknown namespaces."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from django.core.exceptions import ImproperlyConfigured

import realtime
from realtime import namespaces
from realtime.namespaces import Namespace, NamespaceRegistry, resolve
from realtime.protocol.errors import ValidationFailed
from realtime.protocol.streams import CONTRACT_PATTERNS, StreamKind, StreamName, StreamPattern, StreamSyntax
from realtime.publishing import PublishRefused


def test_declaring_a_prefix_twice_or_after_ready_is_refused() -> None:
    """Registry: duplicate namespaces raise; nothing is declared once frozen"""
    spaces = NamespaceRegistry(required=())
    spaces.register(Namespace("todo", r"[a-z]+"))
    with pytest.raises(ImproperlyConfigured, match="todo: is declared twice"):
        spaces.register(Namespace("todo", r"[0-9]+"))
    spaces.freeze()
    with pytest.raises(ImproperlyConfigured, match="after apps were ready"):
        spaces.register(Namespace("late", r"[a-z]+"))
    with pytest.raises(ImproperlyConfigured, match="after apps were ready"):
        realtime.register_namespace(Namespace("late", r"[a-z]+"))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prefix": "Todo", "key_pattern": "[a-z]+"}, "stream prefix 'Todo' must match"),
        ({"prefix": "to:do", "key_pattern": "[a-z]+"}, "must match"),
        ({"prefix": "x" * 21, "key_pattern": "[a-z]+"}, "must match"),
        ({"prefix": "todo", "key_pattern": "[a-z"}, "key pattern of todo: is not a regular expression"),
        ({"prefix": "todo", "key_pattern": "[a-z]+", "retention": timedelta(0)}, "retention must be positive"),
        ({"prefix": "todo", "key_pattern": "[a-z]+", "max_event_bytes": 0}, "max_event_bytes"),
    ],
)
def test_a_bad_declaration_is_refused_when_made(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ImproperlyConfigured, match=message):
        Namespace(**kwargs)


def test_freezing_requires_the_contract_namespaces() -> None:
    spaces = NamespaceRegistry()
    spaces.register(Namespace("room", r"[a-z]+"))
    with pytest.raises(ImproperlyConfigured, match="not declared: user, resource"):
        spaces.freeze()


def test_the_contract_namespaces_are_declared_with_todays_rules() -> None:
    """room:/user:/resource: are re-declared through the registry and keep the contract's rules"""
    room, user, resource = (namespaces.get(prefix) for prefix in ("room", "user", "resource"))
    assert room is not None
    assert user is not None
    assert resource is not None
    assert room.client_publishable
    assert room.presence
    assert room.can_subscribe is None
    assert room.exists is None
    assert not user.client_publishable
    assert user.can_subscribe is not None
    assert not user.presence
    assert not resource.client_publishable
    assert resource.exists is not None
    assert resource.can_subscribe is None
    owner = type("U", (), {"pk": 7})()
    assert user.can_subscribe(owner, StreamName.user(7))
    assert not user.can_subscribe(owner, StreamName.user(8))
    assert {ns.retention for ns in (room, user, resource)} == {"setting"}


def test_resolve_gives_the_namespace_and_keeps_contract_kinds() -> None:
    namespace, name = resolve("room:lobby")
    assert namespace.prefix == "room"
    assert name.kind is StreamKind.ROOM
    todo, name = resolve("todo:shared-a")
    assert todo.prefix == "todo"
    assert name == StreamName("todo", "shared-a")
    assert name.group == "stream.todo.shared-a"
    assert resolve("todo:shared-a")[1] is name  # the parse cache is kept


def test_an_unknown_namespace_is_a_validation_error_naming_the_field() -> None:
    """Bad input: unknown namespace -> validation_error naming the field and the known prefixes"""
    with pytest.raises(ValidationFailed) as caught:
        resolve("chan:1", field="target")
    assert caught.value.data == {"fields": {"target": "invalid stream name"}}
    assert caught.value.message.startswith("data.target: unknown stream namespace 'chan' (known: room:, user:")
    assert "todo:" in caught.value.message


def test_a_key_outside_the_namespace_pattern_names_the_shape() -> None:
    with pytest.raises(ValidationFailed) as caught:
        resolve("todo:Shopping")
    assert caught.value.message == "data.stream: expected todo:LIST ([a-z0-9-]{1,32})"
    assert caught.value.data == {"fields": {"stream": "invalid stream name"}}


def test_keys_stay_group_safe_whatever_the_pattern() -> None:
    """A permissive pattern cannot produce a key the channel layer's group names refuse"""
    syntax = StreamSyntax([*CONTRACT_PATTERNS, StreamPattern.of("any", r".*")])
    assert syntax.parse("any:a.b-c_D", "stream").group == "stream.any.a.b-c_D"
    for bad in ("any:a b", "any:a:b", "any:" + "x" * 65, "any:"):
        with pytest.raises(ValidationFailed):
            syntax.parse(bad, "stream")


def test_the_protocol_default_syntax_is_the_contract() -> None:
    """The pure core parses the contract's names before any registry installs its syntax"""
    syntax = StreamSyntax(CONTRACT_PATTERNS)
    assert syntax.parse("resource:9", "stream") == StreamName.resource(9)
    with pytest.raises(ValidationFailed, match="unknown stream namespace 'todo'"):
        syntax.parse("todo:a", "stream")


def test_publish_refuses_an_unknown_namespace_clearly() -> None:
    """realtime.publish() refuses unknown namespaces with a clear exception, before the database"""
    with pytest.raises(PublishRefused) as caught:
        realtime.publish("chan:1", "thing.done", {})
    assert str(caught.value).startswith("stream: 'chan:1' names an unknown stream namespace 'chan' (known: room:")
    with pytest.raises(PublishRefused, match=r"^stream: 'todo:UP' is not room:NAME .*todo:LIST"):
        realtime.publish("todo:UP", "thing.done", {})


def test_publish_enforces_the_namespace_event_size_limit() -> None:
    """Per-namespace limits: todo: takes at most 512 bytes of data"""
    with pytest.raises(PublishRefused, match=r"^data: over the 512-byte limit of todo: streams"):
        realtime.publish("todo:shared-a", "todo.created", {"title": "x" * 600})
