"""What the ``realtime`` command line prints: close codes with their meaning, pushes, replies.

Human output puts data (pushes, acks, history) on stdout and everything about the connection
(states, closes, errors) on stderr, so ``realtime tail ... > events.txt`` keeps only events.
With ``--json`` every line, of either kind, is one JSON object on stdout with a ``type``.
Nothing here ever receives the token, so nothing can print it.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TextIO

from realtime_client.codes import CloseCode


@dataclass(frozen=True, slots=True)
class CloseMeaning:
    code: int | None  # None: no close frame (the network dropped, or the handshake failed)
    reason: str | None
    meaning: str
    reconnect: str  # what the library does next, in words


# PROTOCOL.md section 5, from a client's point of view; a unit test checks every CloseCode is here.
CLOSE_MEANINGS: tuple[CloseMeaning, ...] = (
    CloseMeaning(CloseCode.NORMAL, None, "closed normally", "no"),
    CloseMeaning(CloseCode.GOING_AWAY, "going_away", "the server is shutting down for good", "yes, with backoff"),
    CloseMeaning(
        CloseCode.ABNORMAL, None, "no close frame: the network dropped or the server died", "yes, with backoff"
    ),
    CloseMeaning(
        CloseCode.MESSAGE_TOO_BIG,
        "message_too_large",
        "a frame was over the server's max_message_bytes; that call fails and is not retried",
        "yes, and resumes",
    ),
    CloseMeaning(CloseCode.INTERNAL_ERROR, "internal_error", "a server fault", "yes, with backoff"),
    CloseMeaning(CloseCode.SERVICE_RESTART, "service_restart", "the server is restarting", "yes, and resumes"),
    CloseMeaning(
        CloseCode.SLOW_CONSUMER,
        "slow_consumer",
        "the connection's send queue overflowed: this client read too slowly",
        "yes, and resumes",
    ),
    CloseMeaning(
        CloseCode.SLOW_CONSUMER,
        "try_again_later",
        "the server cannot serve the connection now (its database or broker is failing)",
        "yes, with backoff, and resumes",
    ),
    CloseMeaning(
        CloseCode.UNAUTHORIZED,
        "token_expired",
        "the access token expired",
        "after getting a fresh token (the CLI logs in again when given --username)",
    ),
    CloseMeaning(CloseCode.UNAUTHORIZED, "missing_token", "no token was sent", "no: pass a token"),
    CloseMeaning(
        CloseCode.UNAUTHORIZED,
        "invalid_token",
        "the token is not valid (malformed, forged, revoked or signed with another key)",
        "no: get a new token",
    ),
    CloseMeaning(CloseCode.FORBIDDEN, "account_disabled", "the user's account is disabled", "no"),
    CloseMeaning(CloseCode.FORBIDDEN, "kicked", "an administrator closed this user's sessions", "no"),
    CloseMeaning(
        CloseCode.IDLE_TIMEOUT,
        "idle_timeout",
        "no client frame for the server's idle timeout",
        "only when asked to (--reconnect-on-idle)",
    ),
    CloseMeaning(CloseCode.RATE_LIMITED, "rate_limited", "kept sending after flow.pause", "yes, with backoff"),
    CloseMeaning(
        CloseCode.RATE_LIMITED,
        "too_many_connections",
        "the user already holds the server's maximum of open sessions",
        "yes, with backoff",
    ),
)


def close_meaning(code: int | None, reason: str | None) -> str:
    """What a close (or a failed connection attempt) means, in words."""
    if code is None or code == CloseCode.ABNORMAL:
        if reason and reason.startswith("http_"):
            status = reason.removeprefix("http_")
            return f"the server refused the WebSocket upgrade with HTTP {status}"
        if reason == "invalid_uri":
            return "the URL is not a ws:// or wss:// URL"
        if reason:
            return f"could not connect, or no welcome ({reason})"
        return CLOSE_MEANINGS[2].meaning
    exact = [m for m in CLOSE_MEANINGS if m.code == code and m.reason == reason]
    same_code = [m for m in CLOSE_MEANINGS if m.code == code]
    if exact:
        return exact[0].meaning
    if same_code:
        return same_code[0].meaning if len(same_code) == 1 else f"{same_code[0].meaning} (or similar)"
    return "a close code this client does not know"


def now_iso() -> str:
    return datetime.now().astimezone().isoformat(timespec="milliseconds")


class Printer:
    """Writes every line the CLI prints, as text or (``as_json``) as JSON lines on stdout."""

    def __init__(self, as_json: bool, out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    def _json(self, obj: dict[str, Any]) -> None:
        self.out.write(json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str) + "\n")
        self.out.flush()

    def _line(self, stream: TextIO, text: str) -> None:
        stream.write(text + "\n")
        stream.flush()

    def note(self, kind: str, text: str, **fields: Any) -> None:
        """Something about the connection: a state change, a close, an error of the CLI."""
        if self.as_json:
            self._json({"type": kind, "time": now_iso(), **fields})
        else:
            self._line(self.err, f"realtime: {text}")

    def state(self, old: str, new: str, welcome: dict[str, Any] | None) -> None:
        detail = ""
        if new == "open" and welcome:
            user: dict[str, Any] = welcome["user"] if isinstance(welcome.get("user"), dict) else {}
            detail = (
                f" (session {welcome.get('session_id')}, server {welcome.get('server')}, user {user.get('username')})"
            )
        self.note("state", f"{old} -> {new}{detail}", old=old, new=new)

    def close(self, code: int | None, reason: str | None, *, stops: bool) -> None:
        meaning = close_meaning(code, reason)
        follows = "the client stops" if stops else "the client reconnects"
        if code is not None:
            said = f"connection closed: {code}" + (f" {reason}" if reason else "")
        else:
            said = "connection failed" if reason else "connection dropped"
        self.note(
            "close",
            f"{said}: {meaning}; {follows}",
            code=code,
            reason=reason,
            meaning=meaning,
            reconnects=not stops,
        )

    def push(self, frame: dict[str, Any]) -> None:
        """One stream event (or a push of no stream): ``OFFSET  TIME  STREAM  EVENT  DATA``."""
        received = now_iso()
        data = frame.get("data")
        ts = data.get("ts") if isinstance(data, dict) and isinstance(data.get("ts"), str) else None
        if self.as_json:
            self._json(
                {
                    "type": "push",
                    "stream": frame.get("stream"),
                    "offset": frame.get("offset"),
                    "event": frame.get("event"),
                    "ts": ts,
                    "received_at": received,
                    "data": data,
                }
            )
            return
        offset = frame.get("offset")
        fields = [
            "-" if offset is None else str(offset),
            ts or received,
            str(frame.get("stream") or "-"),
            str(frame.get("event")),
            json.dumps(data, ensure_ascii=False, separators=(",", ":")),
        ]
        self._line(self.out, "  ".join(fields))

    def ack(self, event: str, data: Any) -> None:
        if self.as_json:
            self._json({"type": "ack", "event": event, "data": data})
        else:
            self._line(self.out, json.dumps(data, ensure_ascii=False, separators=(",", ":")))

    def error(self, code: str, data: dict[str, Any], *, event: str | None = None) -> None:
        """An ``error`` reply, or a call that could not complete (``RealtimeError``)."""
        message = data.get("message")
        if self.as_json:
            self._json({"type": "error", "event": event, "code": code, "data": data})
            return
        self._line(self.err, f"realtime: error {code}" + (f": {message}" if message else ""))
        fields = data.get("fields")
        if isinstance(fields, dict):
            for name, problem in fields.items():
                self._line(self.err, f"  {name}: {problem}")
        rest = {k: v for k, v in data.items() if k not in ("code", "message", "fields")}
        if rest:
            self._line(self.err, "  " + json.dumps(rest, ensure_ascii=False, separators=(",", ":")))

    def record(self, kind: str, data: dict[str, Any]) -> None:
        """A result that is itself the output (the welcome, a history page's summary)."""
        if self.as_json:
            self._json({"type": kind, **data})
        else:
            for key, value in data.items():
                shown = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
                self._line(self.out, f"{key}: {shown}")

    def codes(self) -> None:
        if self.as_json:
            for m in CLOSE_MEANINGS:
                self._json(
                    {"type": "code", "code": m.code, "reason": m.reason, "meaning": m.meaning, "reconnect": m.reconnect}
                )
            return
        rows = [("code", "reason", "meaning", "reconnect?")]
        rows += [(str(m.code), m.reason or "-", m.meaning, m.reconnect) for m in CLOSE_MEANINGS]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        for row in rows:
            self._line(self.out, "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:3])) + "  " + row[3])
