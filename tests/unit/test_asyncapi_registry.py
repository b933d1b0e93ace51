"""The AsyncAPI document cannot silently miss an event (issue 18).

Pushes are rendered from plain dicts in several modules; the only link between them and
the declared schemas of ``realtime/protocol/pushes.py`` is the event name. These tests
read the source of ``realtime/`` for every push name the server can render and fail when
one has no declared schema, and check that the generated document covers every client
event, ack, push, error code and close reason.
"""

from __future__ import annotations

import ast
from pathlib import Path

from realtime.client_events import protocol_table, registry
from realtime.protocol import errors
from realtime.protocol.asyncapi import build_document
from realtime.protocol.close_codes import CLOSE_CODE_FOR, CloseReason
from realtime.protocol.errors import ErrorCode, ProtocolError
from realtime.protocol.pushes import ACKS, PUSHES, ErrorData

REALTIME = Path(__file__).resolve().parents[2] / "realtime"
# The functions that put an event name on the wire or into the event log (whose rows are
# rendered as pushes), and the position of the name among their arguments.
_PUSH_CALLS = {"render_push": 0, "append_in_transaction": 1}
_PUSH_KEYWORDS = {"amessage_publish": "event"}


def _name(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        # A module constant names a push; any other name is a parameter passing on an event
        # (a stored row's) that is named where it was appended, and found there.
        return constants.get(node.id)
    return None


def _function(node: ast.Call) -> str | None:
    if isinstance(node.func, ast.Name):
        return node.func.id
    if isinstance(node.func, ast.Attribute):
        return node.func.attr
    return None


def pushed_event_names(source: str) -> set[str]:
    tree = ast.parse(source)
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign | ast.AnnAssign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in (node.targets if isinstance(node, ast.Assign) else [node.target])
        if isinstance(target, ast.Name)
    }
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        function = _function(node)
        candidates: list[ast.expr] = []
        if function in _PUSH_CALLS and len(node.args) > _PUSH_CALLS[function]:
            candidates.append(node.args[_PUSH_CALLS[function]])
        if function in _PUSH_KEYWORDS:
            candidates += [kw.value for kw in node.keywords if kw.arg == _PUSH_KEYWORDS[function]]
        names.update(name for name in (_name(arg, constants) for arg in candidates) if name is not None)
    return names


def all_pushed_event_names() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in sorted(REALTIME.rglob("*.py")):
        for name in pushed_event_names(path.read_text()):
            found.setdefault(name, []).append(str(path.relative_to(REALTIME.parent)))
    return found


def test_every_push_rendered_in_realtime_has_a_declared_schema() -> None:
    found = all_pushed_event_names()
    # The scan itself works: these are rendered today by consumers, hub_state, fanout,
    # handlers, session_deadlines, event_log (a constant) and the publishing services.
    assert {"session.welcome", "stream.reset", "system.degraded", "system.skipped", "message.new"} <= set(found)
    assert {"resource.updated", "message.direct", "auth.expiring", "flow.pause"} <= set(found)
    undeclared = {name: where for name, where in found.items() if name not in PUSHES}
    assert undeclared == {}, f"declare these pushes in realtime/protocol/pushes.py: {undeclared}"


def test_the_scan_finds_a_new_push_and_a_push_named_by_a_constant() -> None:
    """Not vacuous: a push added anywhere, directly or through a module constant, is seen."""
    source = (
        'NOTICE = "system.notice"\n'
        'def f(conn):\n    conn.enqueue(render_push("flow.hold", {}))\n    render_push(NOTICE, {})\n'
        '    EventLog.append_in_transaction("s", "thing.done", {})\n'
        '    amessage_publish(stream=s, event="message.edited", sender=u, client_id=None, text="")\n'
    )
    assert pushed_event_names(source) == {"flow.hold", "system.notice", "thing.done", "message.edited"}


# The realtime package's own events (the contract); apps' events are acked with an object.
EVENTS = registry.builtin()


def test_every_client_event_has_a_declared_ack() -> None:
    assert set(ACKS) == set(EVENTS)


def test_the_document_has_an_operation_for_every_event_and_push() -> None:
    document = build_document(1, protocol_table())
    operations = document["operations"]
    sent = {op["title"] for op in operations.values() if op["action"] == "send"}
    received = {op["title"] for op in operations.values() if op["action"] == "receive"}
    assert sent == set(protocol_table())
    assert received == set(PUSHES)
    for op in operations.values():
        if op["action"] == "send":
            replies = [ref["$ref"].rsplit("/", 1)[1] for ref in op["reply"]["messages"]]
            assert replies == ["ack_" + op["title"].replace(".", "_"), "error"], op


def test_client_event_payloads_are_the_registry_schemas() -> None:
    document = build_document(1, protocol_table())
    messages = document["channels"]["realtime"]["messages"]
    schemas = document["components"]["schemas"]
    for name, spec in protocol_table().items():
        data = messages[f"send_{name.replace('.', '_')}"]["payload"]["properties"]["data"]
        if spec.schema is None:
            assert data["type"] == "object"
            continue
        assert data == {"$ref": f"#/components/schemas/{spec.schema.__name__}"}
        declared = spec.schema.model_json_schema(ref_template="#/components/schemas/{model}")
        declared.pop("$defs", None)
        assert schemas[spec.schema.__name__] == declared


def test_error_and_close_codes_are_all_in_the_document() -> None:
    document = build_document(1, protocol_table())
    assert document["components"]["schemas"]["ErrorCode"]["enum"] == [code.value for code in ErrorCode]
    closes = {(c["code"], c["reason"]) for c in document["x-close-codes"]}
    assert {(int(CLOSE_CODE_FOR[reason]), reason.value) for reason in CloseReason} <= closes
    assert (1000, "") in closes


def error_detail_keywords(source: str) -> set[str]:
    """Keywords given to ProtocolError classes in ``source``: each becomes a key of ``data``."""
    classes = {
        cls.__name__ for cls in vars(errors).values() if isinstance(cls, type) and issubclass(cls, ProtocolError)
    }
    keywords: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and _function(node) in classes:
            keywords.update(kw.arg for kw in node.keywords if kw.arg is not None and kw.arg != "message")
    return keywords


def test_every_error_detail_raised_in_realtime_is_declared() -> None:
    """An error's extra keys (fields, expected, limit, ...) are all in ErrorData, so the
    document's error reply names every key a client can get."""
    found = set().union(*(error_detail_keywords(path.read_text()) for path in REALTIME.rglob("*.py")))
    assert {"fields", "expected", "limit", "current_version", "current_data"} <= found
    declared = {field.alias or name for name, field in ErrorData.model_fields.items()}
    assert found - declared == set(), "declare these error details in ErrorData (realtime/protocol/pushes.py)"
    sample = 'raise LimitExceeded("x", limit="L", retry_in=3)\nraise Conflict(current_version=1, current_data={})'
    assert error_detail_keywords(sample) == {"limit", "retry_in", "current_version", "current_data"}
