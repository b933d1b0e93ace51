"""``realtime`` / ``python -m realtime_client``: a debugging command line (docs/cli.md).

It is a thin shell around :class:`RealtimeClient`, so what it shows is what the library
does: the same reconnects, resumes and close decisions. Exit status: 0 done (or Ctrl-C),
1 an error reply, a close that stops the client, a failed login or a timeout, 2 bad usage.
Standard library and ``websockets`` only, like the rest of the package.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import getpass
import json
import logging
import os
import signal
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from realtime_client.cli_output import Printer
from realtime_client.client import RealtimeClient, TokenProvider
from realtime_client.connection import Closed
from realtime_client.errors import ConnectionLost, RealtimeError
from realtime_client.ids import check_id

DEFAULT_URL = "ws://127.0.0.1:8000/ws/"


class CliError(Exception):
    """A failure the CLI reports as one line and exit status ``status``."""

    def __init__(self, code: str, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


# Logging in ---------------------------------------------------------------------------------


def http_origin(ws_url: str) -> str:
    parts = urllib.parse.urlsplit(ws_url)
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise CliError("usage", f"--url must be a ws:// or wss:// URL, not {ws_url!r}", 2)
    return f"{scheme}://{parts.netloc}"


def post_json(url: str, body: dict[str, str], timeout: float) -> dict[str, Any]:
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by http_origin
        url, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            parsed = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")[:300]
        with contextlib.suppress(ValueError, AttributeError):
            detail = json.loads(detail).get("detail", detail)
        raise CliError("login_failed", f"POST {url}: HTTP {exc.code}: {detail}") from None
    except (OSError, ValueError) as exc:
        raise CliError("login_failed", f"POST {url}: {exc}") from None
    if not isinstance(parsed, dict) or not isinstance(parsed.get("access"), str):
        raise CliError("login_failed", f"POST {url}: the answer has no access token")
    return parsed


class Login:
    """Username and password: the first token, and fresh ones when the server says token_expired."""

    def __init__(self, origin: str, username: str, password: str, timeout: float) -> None:
        self.origin = origin
        self.username = username
        self._password = password
        self.timeout = timeout
        self._refresh: str | None = None

    def obtain(self) -> str:
        body = {"username": self.username, "password": self._password}
        tokens = post_json(f"{self.origin}/api/auth/token/", body, self.timeout)
        self._refresh = tokens.get("refresh") if isinstance(tokens.get("refresh"), str) else None
        return str(tokens["access"])

    def renew(self) -> str:
        # The refresh token first (refresh tokens rotate: keep the new one), a new login if it fails.
        if self._refresh is not None:
            with contextlib.suppress(CliError):
                tokens = post_json(f"{self.origin}/api/auth/token/refresh/", {"refresh": self._refresh}, self.timeout)
                if isinstance(tokens.get("refresh"), str):
                    self._refresh = tokens["refresh"]
                return str(tokens["access"])
        return self.obtain()

    async def provider(self) -> str:
        return await asyncio.to_thread(self.renew)


async def credentials(args: argparse.Namespace) -> tuple[str | None, TokenProvider | None]:
    if args.username:
        password = args.password or os.environ.get("REALTIME_PASSWORD")
        if password is None:
            if not sys.stdin.isatty():
                raise CliError("usage", "--username needs --password or REALTIME_PASSWORD", 2)
            password = getpass.getpass(f"password for {args.username}: ")
        login = Login(http_origin(args.url), args.username, password, args.timeout)
        return await asyncio.to_thread(login.obtain), login.provider
    token = args.token or os.environ.get("REALTIME_TOKEN")
    if not token:
        raise CliError("usage", "give --token, REALTIME_TOKEN or --username/--password", 2)
    return token, None


# Commands -------------------------------------------------------------------------------------


class Session:
    """One client plus the printer; reports every state change and every close the library sees."""

    def __init__(self, args: argparse.Namespace, printer: Printer, token: str | None, provider: TokenProvider | None):
        self.printer = printer
        self.client = RealtimeClient(
            args.url,
            token,
            token_provider=provider,
            ack_timeout=args.ack_timeout,
            reconnect_on_idle=getattr(args, "reconnect_on_idle", False),
        )
        self._seen: Closed | None = None
        self.closing = False  # the CLI is closing the client itself: nothing to report
        self.client.on_state_change(self._on_state)

    def _report_close(self) -> None:
        # last_close is set before the state changes, and again on every failed attempt
        # (which changes no state): compare identities, not values, to see each one once.
        closed = self.client.last_close
        if closed is not None and closed is not self._seen:
            self._seen = closed
            self.printer.close(closed.code, closed.reason, stops=self.client.closed)

    def _on_state(self, old: str, new: str) -> None:
        if self.closing:
            return
        if new != "open":
            self._report_close()
        self.printer.state(old, new, self.client.welcome)

    async def watch_closes(self) -> None:
        while not self.client.closed:
            await asyncio.sleep(0.1)
            self._report_close()

    async def connect(self, within: float | None) -> None:
        try:
            async with asyncio.timeout(within):
                await self.client.connect()
        except TimeoutError:
            raise CliError("timeout", f"could not connect to {self.client.url} within {within:g} s") from None
        except ConnectionLost:
            raise CliError("connection_lost", "the server refused the connection (see above)") from None


def read_json_object(text: str) -> dict[str, Any]:
    if text == "-":
        text = sys.stdin.read()
    try:
        value = json.loads(text) if text.strip() else {}
    except ValueError as exc:
        raise CliError("usage", f"DATA is not JSON: {exc}", 2) from None
    if not isinstance(value, dict):
        raise CliError("usage", "DATA must be a JSON object", 2)
    return value


async def run_call(session: Session, args: argparse.Namespace, event: str, data: dict[str, Any]) -> Any:
    try:
        async with asyncio.timeout(args.timeout):
            return await session.client.call(event, data, id=getattr(args, "id", None))
    except TimeoutError:
        raise CliError("timeout", f"no reply to {event} within {args.timeout:g} s") from None


async def cmd_send(session: Session, args: argparse.Namespace) -> int:
    data = read_json_object(args.data)
    await session.connect(args.timeout)
    try:
        ack = await run_call(session, args, args.event, data)
    except RealtimeError as exc:
        session.printer.error(exc.code, exc.data, event=args.event)
        return 1
    session.printer.ack(args.event, ack)
    return 0


async def cmd_history(session: Session, args: argparse.Namespace) -> int:
    await session.connect(args.timeout)
    data: dict[str, Any] = {"stream": args.stream, "since": args.since}
    if args.limit is not None:
        data["limit"] = args.limit
    try:
        page = await run_call(session, args, "stream.history", data)
    except RealtimeError as exc:
        session.printer.error(exc.code, exc.data, event="stream.history")
        return 1
    events = page.get("events", []) if isinstance(page, dict) else []
    for frame in events:
        session.printer.push(frame)
    more = bool(page.get("more")) if isinstance(page, dict) else False
    last = events[-1].get("offset") if events else args.since
    session.printer.note(
        "history", f"{len(events)} events; more: {str(more).lower()} (page on with --since {last})", more=more
    )
    return 0


async def cmd_whoami(session: Session, args: argparse.Namespace) -> int:
    await session.connect(args.timeout)
    session.printer.record("welcome", dict(session.client.welcome or {}))
    return 0


async def follow(session: Session, sub: Any) -> int:
    try:
        async for frame in sub:
            session.printer.push(frame)
    except ConnectionLost:
        return 1  # the close was reported by the state callback
    except RealtimeError as exc:
        session.printer.error(exc.code, exc.data | {"stream": sub.stream}, event="stream.subscribe")
        return 1
    return 0


async def cmd_tail(session: Session, args: argparse.Namespace) -> int:
    """Follow until every subscription ends, the client stops, or Ctrl-C / SIGTERM (status 0)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    body = asyncio.ensure_future(tail_streams(session, args))
    stopper = asyncio.ensure_future(stop.wait())
    await asyncio.wait([body, stopper], return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if not body.done():  # interrupted, perhaps still connecting: run() closes the client with 1000
        body.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await body
        return 0
    return body.result()


def _ephemeral(frame: dict[str, Any]) -> bool:
    return str(frame.get("event", "")).startswith(("presence.", "stream.signal"))


async def tail_streams(session: Session, args: argparse.Namespace) -> int:
    # Announcements, flow control: pushes of no stream. Not presence (presence.*) nor signals
    # (stream.signal): a room's members and typing indicators are not its events.
    session.client.on_push(lambda frame: None if _ephemeral(frame) else session.printer.push(frame))
    await session.connect(None)  # like the library: retry until the server answers or refuses
    followers = []
    for stream in args.streams:
        try:
            sub = await session.client.subscribe(stream, args.since)
        except RealtimeError as exc:
            session.printer.error(exc.code, exc.data | {"stream": stream}, event="stream.subscribe")
            return 1
        if args.epoch is not None and sub.epoch != args.epoch:
            await sub.unsubscribe()
            message = f"{stream} has epoch {sub.epoch}, not {args.epoch}: its offsets start over"
            session.printer.error("not_recovered", {"message": message, "stream": stream}, event="stream.subscribe")
            return 1
        # Where printing starts. Not sub.last_offset: frames read with the ack are already
        # queued (not yet printed) and have moved it.
        start = sub.start_offset
        session.printer.note(
            "subscribed", f"following {stream} from offset {start} (epoch {sub.epoch})",
            stream=stream, offset=start, epoch=sub.epoch,
        )  # fmt: skip
        followers.append(follow(session, sub))
    return max(await asyncio.gather(*followers), default=0)


COMMANDS = {"send": cmd_send, "history": cmd_history, "whoami": cmd_whoami, "tail": cmd_tail}


# Arguments ------------------------------------------------------------------------------------


def call_id(value: str) -> str:
    try:
        return check_id(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="realtime",
        description="Debug a realtime WebSocket server: send events, tail streams, see close codes.",
        epilog="The token is never printed. See docs/cli.md.",
    )
    p.add_argument("--url", default=os.environ.get("REALTIME_URL", DEFAULT_URL), help="WebSocket URL (REALTIME_URL)")
    auth = p.add_mutually_exclusive_group()
    auth.add_argument("--token", help="access token (or REALTIME_TOKEN; safer: not visible in ps)")
    auth.add_argument("--username", help="log in at the URL's origin, POST /api/auth/token/")
    p.add_argument("--password", help="with --username (or REALTIME_PASSWORD, or asked on a terminal)")
    p.add_argument("--json", action="store_true", help="one JSON object per line on stdout for everything")
    p.add_argument("--timeout", type=float, default=15.0, help="seconds to connect and to wait for a reply")
    p.add_argument("--ack-timeout", type=float, default=5.0, help="seconds before an unanswered call is re-sent")
    p.add_argument("-v", "--verbose", action="store_true", help="also print the library's log (retries, gaps)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    send = sub.add_parser("send", help="send one event, print the ack or the error")
    send.add_argument("event", help="event name, e.g. echo, message.send")
    send.add_argument("data", nargs="?", default="{}", help="JSON object, or - to read it from stdin")
    send.add_argument("--id", type=call_id, help="the call's id (idempotency key of publishes)")
    tail = sub.add_parser("tail", help="subscribe and print every event, reconnecting and resuming")
    tail.add_argument("streams", nargs="+", metavar="STREAM")
    tail.add_argument("--since", type=int, help="replay events after this offset first")
    tail.add_argument("--epoch", help="the epoch --since belongs to; a different one is not_recovered")
    tail.add_argument("--reconnect-on-idle", action="store_true", help="reconnect after 4408 idle_timeout")
    history = sub.add_parser("history", help="print one page of a stream's stored events")
    history.add_argument("stream")
    history.add_argument("--since", type=int, required=True)
    history.add_argument("--limit", type=int)
    sub.add_parser("whoami", help="connect and print the session.welcome")
    sub.add_parser("codes", help="print the close codes, their meaning and whether a client reconnects")
    return p


async def run(args: argparse.Namespace, printer: Printer) -> int:
    http_origin(args.url)  # a URL the library would refuse is a usage error, not a refused connection
    token, provider = await credentials(args)
    session = Session(args, printer, token, provider)
    watcher = asyncio.ensure_future(session.watch_closes())
    try:
        return await COMMANDS[args.command](session, args)
    finally:
        watcher.cancel()
        session.closing = True
        await session.client.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    printer = Printer(args.json)
    if args.verbose:
        # Only the client library's own lines: websockets' debug log would show frames, tokens included.
        logging.basicConfig(level=logging.WARNING, format="realtime: %(name)s: %(message)s")
        logging.getLogger("realtime_client").setLevel(logging.INFO)
    if args.command == "codes":
        printer.codes()
        return 0
    if args.timeout <= 0 or args.ack_timeout <= 0:
        printer.note("error", "--timeout and --ack-timeout must be > 0", code="usage")
        return 2
    try:
        return asyncio.run(run(args, printer))
    except CliError as exc:
        printer.note("error", str(exc), code=exc.code, message=str(exc))
        return exc.status
    except KeyboardInterrupt:
        return 130  # Ctrl-C during send, history or whoami (tail handles it and exits 0)


if __name__ == "__main__":
    sys.exit(main())
