"""The debugging CLI (``python -m realtime_client``, issue 18) as a subprocess against a real server.

Each test runs the command exactly as a person would; every run also checks the access
token appears nowhere in what the CLI printed.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from realtime.protocol.close_codes import CLOSE_CODE_FOR
from realtime_client.cli_output import CLOSE_MEANINGS
from realtime_client.codes import CloseCode
from tests.conftest import scaled
from tests.e2e.helpers import PASSWORD, PYTHON, REPO, ServerProcess, call, connect, mint_token, obtain_tokens, recv_json


def cli_env(token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    if token is not None:
        env["REALTIME_TOKEN"] = token
    return env


def run_cli(
    server: ServerProcess, *args: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [PYTHON, "-m", "realtime_client", "--url", server.ws_url, *args],
        cwd=REPO,
        env=cli_env(token),
        input=stdin,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    if token is not None:
        assert token not in result.stdout + result.stderr, "the CLI printed the token"
    return result


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


class Tail:
    """A running ``realtime tail``: its stdout lines arrive on a queue read by a thread."""

    def __init__(self, server: ServerProcess | str, token: str, *args: str) -> None:
        self.token = token
        url = server if isinstance(server, str) else server.ws_url
        self.proc = subprocess.Popen(
            [PYTHON, "-m", "realtime_client", "--url", url, *args],
            cwd=REPO,
            env=cli_env(token),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        assert self.proc.stdout is not None
        self.reader = threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True)
        self.reader.start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.lines.put(line)

    def expect(self, predicate: Callable[[str], bool], timeout: float = 20.0) -> str:
        deadline = time.monotonic() + scaled(timeout)
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no matching line; saw {self.seen}, stderr so far unknown"
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            self.seen.append(line)
            if predicate(line):
                return line

    def stop(self, interrupt: bool = True) -> tuple[int, str]:
        """SIGINT (Ctrl-C), or wait for the CLI to end by itself; the exit status and stderr."""
        if interrupt and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            code = self.proc.wait(timeout=scaled(20))
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.reader.join(scaled(10))  # the pipe ends with the process
        while not self.lines.empty():
            self.seen.append(self.lines.get())
        assert self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.proc.stdout.close()
        err = self.proc.stderr.read()
        self.proc.stderr.close()
        assert self.token not in err + "".join(self.seen)
        return code, err


async def publish(server: ServerProcess, token: str, stream: str, *texts: str) -> list[int]:
    ws = await connect(server, token)
    await recv_json(ws)  # welcome
    offsets = []
    for text in texts:
        reply = await call(
            ws, {"event": "message.send", "id": uuid.uuid4().hex, "data": {"stream": stream, "text": text}}
        )
        assert reply["event"] == "ack", reply
        offsets.append(reply["data"]["offset"])
    await ws.close()
    return offsets


def test_cli_send_echo_prints_the_ack(server) -> None:
    """CLI: `send echo '{"x":1}'` prints the ack data and exits 0; DATA from stdin with `-` too."""
    token = obtain_tokens(server, "alice")["access"]
    result = run_cli(server, "send", "echo", '{"x":1}', token=token)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"x": 1}
    piped = run_cli(server, "send", "echo", "-", token=token, stdin='{"y": [1, 2]}')
    assert piped.returncode == 0, piped.stderr
    assert json.loads(piped.stdout) == {"y": [1, 2]}


def test_cli_send_error_reply_prints_code_message_fields(server) -> None:
    """CLI: an error reply prints its code, message and fields and exits 1; bad DATA is a usage error (2)."""
    token = obtain_tokens(server, "alice")["access"]
    result = run_cli(server, "send", "message.send", '{"stream":"room:cli"}', token=token)
    assert result.returncode == 1
    assert result.stdout == ""
    assert "error validation_error" in result.stderr
    assert "  text: " in result.stderr  # the field the server named
    as_json = run_cli(server, "--json", "send", "message.send", '{"stream":"room:cli"}', token=token)
    assert as_json.returncode == 1
    [line] = [line for line in json_lines(as_json.stdout) if line["type"] == "error"]
    assert line["code"] == "validation_error"
    assert "text" in line["data"]["fields"]
    bad = run_cli(server, "send", "echo", "[1, 2]", token=token)
    assert bad.returncode == 2
    assert "DATA must be a JSON object" in bad.stderr


def test_cli_forged_token_prints_4401_meaning_and_fails(server, e2e_db) -> None:
    """CLI / Security: Invalid token -> the 4401 invalid_token close is printed with its meaning and
    the CLI exits non-zero (the library stops, it does not retry)."""
    forged = mint_token(e2e_db.user_ids["alice"], expires_in=300, key="not-the-server-key-0123456789abcdef012345")
    result = run_cli(server, "send", "echo", "{}", token=forged)
    assert result.returncode == 1
    assert "connection closed: 4401 invalid_token: the token is not valid" in result.stderr
    assert "the client stops" in result.stderr
    as_json = run_cli(server, "--json", "tail", "room:cli", token=forged)
    assert as_json.returncode == 1
    closes = [line for line in json_lines(as_json.stdout) if line["type"] == "close"]
    assert closes == [closes[0]]
    assert closes[0]["code"] == 4401
    assert closes[0]["reason"] == "invalid_token"
    assert closes[0]["reconnects"] is False


def test_cli_login_with_username_and_password(server) -> None:
    """CLI: --username/--password logs in at the URL's origin (POST /api/auth/token/); a wrong
    password is a clear failure, and the password is never printed."""
    result = run_cli(server, "--username", "bob", "--password", PASSWORD, "--json", "whoami")
    assert result.returncode == 0, result.stderr
    lines = json_lines(result.stdout)
    welcome = next(line for line in lines if line["type"] == "welcome")
    assert welcome["user"]["username"] == "bob"
    assert PASSWORD not in result.stdout + result.stderr
    wrong = run_cli(server, "--username", "bob", "--password", "wrong-password", "send", "echo", "{}")
    assert wrong.returncode == 1
    assert "HTTP 401" in wrong.stderr
    assert "wrong-password" not in wrong.stdout + wrong.stderr


async def test_cli_tail_since_replays_then_follows_live(server) -> None:
    """CLI: `tail STREAM --since 0` prints the stored events in offset order, then a live one another
    client publishes, as `OFFSET  TIME  STREAM  EVENT  DATA`; Ctrl-C ends it with status 0. The
    --json variant's lines all parse; `history` prints the same events."""
    token = obtain_tokens(server, "alice")["access"]
    stream = f"room:cli-{uuid.uuid4().hex[:8]}"
    assert await publish(server, token, stream, "one", "two") == [1, 2]
    tail = Tail(server, token, "tail", stream, "--since", "0")
    try:
        first = tail.expect(lambda line: line.startswith("1  "))
        _, ts, name, event, data = first.rstrip("\n").split("  ", 4)
        assert (name, event, json.loads(data)["text"]) == (stream, "message.new", "one")
        assert ts.startswith("20")
        assert "T" in ts
        tail.expect(lambda line: line.startswith("2  "))
        await publish(server, token, stream, "three")
        live = tail.expect(lambda line: line.startswith("3  "))
        assert json.loads(live.split("  ", 4)[4])["text"] == "three"
    finally:
        code, err = tail.stop()
    assert code == 0, err
    assert "connecting -> open" in err
    assert [line.split("  ", 1)[0] for line in tail.seen] == ["1", "2", "3"]

    as_json = Tail(server, token, "--json", "tail", stream, "--since", "1")
    try:
        as_json.expect(lambda line: json.loads(line).get("offset") == 3)
    finally:
        code, err = as_json.stop()
    assert code == 0, err
    parsed = [json.loads(line) for line in as_json.seen]
    assert [p["offset"] for p in parsed if p["type"] == "push"] == [2, 3]
    assert {"state", "subscribed", "push"} <= {p["type"] for p in parsed}
    history = run_cli(server, "--json", "history", stream, "--since", "0", "--limit", "2", token=token)
    assert history.returncode == 0, history.stderr
    lines = json_lines(history.stdout)
    assert [line["offset"] for line in lines if line["type"] == "push"] == [1, 2]
    [summary] = [line for line in lines if line["type"] == "history"]
    assert summary["more"] is True


async def test_cli_tail_reconnects_and_resumes_after_restart(server_factory) -> None:
    """CLI / Server restart: tail prints 1012 service_restart with its meaning, reconnects like the
    library and resumes from its last offset (nothing missed, nothing twice)."""
    server = server_factory()
    token = obtain_tokens(server, "alice")["access"]
    stream = f"room:cli-{uuid.uuid4().hex[:8]}"
    await publish(server, token, stream, "before")
    tail = Tail(server, token, "--json", "tail", stream, "--since", "0")
    restarted: ServerProcess | None = None
    try:
        tail.expect(lambda line: json.loads(line).get("offset") == 1)
        server.stop()  # SIGTERM: the server closes every connection with 1012
        restarted = server.restarted()
        await publish(restarted, token, stream, "after")
        tail.expect(lambda line: json.loads(line).get("offset") == 2)
    finally:
        code, err = tail.stop()
        if restarted is not None:
            restarted.stop()
    assert code == 0, err
    parsed = [json.loads(line) for line in tail.seen]
    closes = [p for p in parsed if p["type"] == "close"]
    assert closes[0]["code"] == 1012
    assert closes[0]["reason"] == "service_restart"
    assert closes[0]["reconnects"] is True
    assert "restarting" in closes[0]["meaning"]
    assert [p["offset"] for p in parsed if p["type"] == "push"] == [1, 2]


async def test_cli_tail_ends_nonzero_when_kicked(server) -> None:
    """CLI / Security: a close that stops the library mid-tail (4403 kicked) is printed with its
    meaning and the CLI exits 1 by itself."""
    token = obtain_tokens(server, "bob")["access"]
    tail = Tail(server, token, "--json", "tail", "room:cli-kick")
    try:
        tail.expect(lambda line: json.loads(line)["type"] == "subscribed")
        ws = await connect(server, obtain_tokens(server, "admin")["access"])
        await recv_json(ws)  # welcome
        reply = await call(ws, {"event": "admin.kick", "id": "k1", "data": {"username": "bob"}})
        assert reply["event"] == "ack", reply
        closed = json.loads(tail.expect(lambda line: json.loads(line)["type"] == "close"))
    finally:
        code, err = tail.stop(interrupt=False)
    assert code == 1, err
    assert (closed["code"], closed["reason"], closed["reconnects"]) == (4403, "kicked", False)
    assert "administrator" in closed["meaning"]


def test_cli_tail_retries_an_unreachable_server_and_ctrl_c_exits_0() -> None:
    """CLI: like the library, tail keeps retrying while nothing listens (printing each failed
    attempt) and Ctrl-C while it is still connecting ends it cleanly with status 0."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    tail = Tail(f"ws://127.0.0.1:{port}/ws/", "unused-token", "--json", "tail", "room:cli")
    try:
        for _ in range(2):
            failed = json.loads(tail.expect(lambda line: json.loads(line)["type"] == "close"))
            assert failed["code"] is None
            assert failed["reconnects"] is True
    finally:
        code, err = tail.stop()
    assert code == 0, err


def test_cli_codes_table_covers_every_close() -> None:
    """CLI `codes`: every close code and every close reason the server sends has a meaning."""
    pairs = {(m.code, m.reason) for m in CLOSE_MEANINGS}
    assert {int(code) for code in CloseCode} <= {m.code for m in CLOSE_MEANINGS}
    for reason, code in CLOSE_CODE_FOR.items():
        assert (int(code), reason.value) in pairs, reason
    result = subprocess.run(
        [PYTHON, "-m", "realtime_client", "codes"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "4401  invalid_token" in result.stdout
