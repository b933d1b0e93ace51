"""``realtime.publish`` refuses bad input before touching the database, and finds the server's
hub only from a thread the ASGI server runs sync code in (issue 16). No database here: the
e2e tests (tests/e2e/test_publish_api.py) publish for real."""

from __future__ import annotations

import importlib
import subprocess
import sys
import threading
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.conf import settings

import realtime
from realtime.protocol.errors import ValidationFailed
from realtime.publishing import MAX_ID_LENGTH, PublishRefused, _in_server_thread


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        (("lobby", "score.changed", {}), {}, "stream: 'lobby' is not room:NAME"),
        ((42, "score.changed", {}), {}, "stream: must be a string"),
        (("room:a", "Score Changed", {}), {}, "event: must be a dotted lowercase name"),
        (("room:a", "x" * 65, {}), {}, "event: must be a dotted lowercase name"),
        (("room:a", "error", {}), {}, "event: 'error' is reserved"),
        (("room:a", "system.degraded", {}), {}, "event: 'system.degraded' is reserved"),
        (("room:a", "stream.reset", {}), {}, "event: 'stream.reset' is reserved"),
        (("room:a", "score.changed", [1]), {}, "data: must be a dict"),
        (("room:a", "score.changed", {"a": [{"b": "\ud800"}]}), {}, "data.a.0.b: lone surrogate"),
        (("room:a", "score.changed", {"n": 2**64}), {}, "data.n: number out of range"),
        (("room:a", "score.changed", {"f": float("nan")}), {}, "data.f: number not finite"),
        (("room:a", "score.changed", {}), {"id": ""}, "id: must be a non-empty string"),
        (("room:a", "score.changed", {}), {"id": "x" * (MAX_ID_LENGTH + 1)}, "id: must be a non-empty string"),
        (("room:a", "score.changed", {}), {"id": "a\x00"}, "id: must be a non-empty string"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_argument(
    args: tuple[Any, ...], kwargs: dict[str, Any], message: str
) -> None:
    """Issue 16: bad input raises a clear error naming the field (a ValueError and the protocol's
    validation_error), before any database work: these run without a database."""
    with pytest.raises(PublishRefused) as caught:
        realtime.publish(*args, **kwargs)
    assert str(caught.value).startswith(message), str(caught.value)
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, ValidationFailed)


def test_position_refuses_a_bad_stream_name() -> None:
    with pytest.raises(PublishRefused, match=r"^stream: "):
        realtime.position("user:0")


async def test_the_sync_functions_name_their_async_twins_inside_an_event_loop() -> None:
    with pytest.raises(RuntimeError, match=r"await realtime\.apublish"):
        realtime.publish("room:a", "score.changed", {})
    with pytest.raises(RuntimeError, match=r"await realtime\.aposition"):
        realtime.position("room:a")


def test_import_realtime_is_cheap_and_safe_before_django_is_set_up() -> None:
    """The public names load on first use: a bare ``import realtime`` pulls in no Django."""
    code = "import sys, realtime; print(any(m == 'django' or m.startswith('django.') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = realtime.nothing


async def test_only_a_server_thread_publishes_through_the_hub() -> None:
    """In a process that loaded the ASGI app, sync code run by the server (sync_to_async) reaches
    the server's hub; any other thread (a worker's own, a script's) sends on the bus instead."""
    importlib.import_module(str(settings.ASGI_APPLICATION).rpartition(".")[0])
    assert await sync_to_async(_in_server_thread)() is True
    seen: list[bool] = []
    thread = threading.Thread(target=lambda: seen.append(_in_server_thread()))
    thread.start()
    thread.join()
    assert seen == [False]
