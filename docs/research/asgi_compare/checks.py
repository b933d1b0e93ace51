#!/usr/bin/env python3
"""Behaviour checks against one running ASGI server (the benchproj app). Loopback only.

  close       /ws/close/: app closes with 4401 "missing_token"; what does the client get?
  flood       /ws/flood/: app sends 64 KiB frames for 3 s to a client that never reads;
              frames the app got through + server RSS growth (does send() block?)
  slowreader  /ws/slow/: app sleeps 0.5 s per message; client sends 64 KiB frames for 3 s;
              how many sends completed + server RSS growth (does the server stop reading?)
  oversize    /ws/: frame header announcing 100 MB, payload trickled at ~6 MB/s for <= 6 s;
              close code/reason, bytes accepted before the close, RSS growth
  handshake   raw GET /ws/ with broken Upgrade requests; HTTP status + Sec-WebSocket-Version;
              also which extensions are negotiated when a client offers permessage-deflate
  accesslog   connect to /ws/?token=secret; does the server log contain "secret"?
  badutf8     text frame with invalid UTF-8; close code and log lines produced

    taskset -c 1 python checks.py --port 8001 --pid 12345 --log /tmp/server.log \
        --state-dir /tmp/asgi-bench-state-8001 [--only close,handshake]
Prints one JSON object. Every loop is bounded in time.
"""
import argparse
import asyncio
import base64
import json
import os
import select
import socket
import struct
import time

from servers import tree_rss_kb
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

HOST = "127.0.0.1"
GOOD_KEY = base64.b64encode(os.urandom(16)).decode()


def raw_request(port, lines, read_timeout=3.0):
    """Send an HTTP/1.1 request; return (status_line, headers(lower->value), leftover, sock)."""
    s = socket.create_connection((HOST, port), timeout=read_timeout)
    s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    buf = b""
    deadline = time.monotonic() + read_timeout
    while b"\r\n\r\n" not in buf and time.monotonic() < deadline:
        try:
            chunk = s.recv(65536)
        except TimeoutError:
            break
        if not chunk:
            break
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    hl = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in hl[1:]:
        k, _, v = line.partition(":")
        headers.setdefault(k.strip().lower(), []).append(v.strip())
    return hl[0] if hl and hl[0] else "(no response)", headers, rest, s


def ws_upgrade(port, path, extra=()):
    lines = [f"GET {path} HTTP/1.1", f"Host: {HOST}:{port}", "Upgrade: websocket",
             "Connection: Upgrade", f"Sec-WebSocket-Key: {GOOD_KEY}",
             "Sec-WebSocket-Version: 13", *extra]
    return raw_request(port, lines)


def frame_header(opcode, length, fin=True):
    b0 = (0x80 if fin else 0) | opcode
    if length < 126:
        h = struct.pack("!BB", b0, 0x80 | length)
    elif length < 65536:
        h = struct.pack("!BBH", b0, 0x80 | 126, length)
    else:
        h = struct.pack("!BBQ", b0, 0x80 | 127, length)
    return h + b"\x00\x00\x00\x00"  # zero mask key: payload goes out unchanged


def parse_frames(buf):
    """Yield (opcode, payload) for complete unmasked server frames in buf."""
    out, i = [], 0
    while len(buf) - i >= 2:
        b0, b1 = buf[i], buf[i + 1]
        ln, j = b1 & 0x7F, i + 2
        if ln == 126:
            if len(buf) - j < 2:
                break
            ln, j = struct.unpack("!H", buf[j:j + 2])[0], j + 2
        elif ln == 127:
            if len(buf) - j < 8:
                break
            ln, j = struct.unpack("!Q", buf[j:j + 8])[0], j + 8
        if b1 & 0x80:
            j += 4
        if len(buf) - j < ln:
            break
        out.append((b0 & 0x0F, buf[j:j + ln]))
        i = j + ln
    return out


def close_info(frames):
    for op, p in frames:
        if op == 8:
            if len(p) >= 2:
                return {"close_code": struct.unpack("!H", p[:2])[0],
                        "close_reason": p[2:].decode("utf-8", "replace")}
            return {"close_code": None, "close_reason": "(close frame without code -> client sees 1005)"}
    return None


class Log:
    def __init__(self, path):
        self.path = path
        self.mark()

    def mark(self):
        self.pos = os.path.getsize(self.path) if self.path and os.path.exists(self.path) else 0

    def new(self):
        if not self.path or not os.path.exists(self.path):
            return ""
        with open(self.path, "rb") as f:
            f.seek(self.pos)
            return f.read().decode("utf-8", "replace")


# ---------------------------------------------------------------- checks

async def check_close(a):
    try:
        async with connect(f"ws://{HOST}:{a.port}/ws/close/", compression=None,
                           ping_interval=None, open_timeout=10) as ws:
            await asyncio.wait_for(ws.recv(), 5)
            return {"error": "received a message instead of a close"}
    except ConnectionClosed as e:
        rc = e.rcvd
        code = rc.code if rc else None
        reason = rc.reason if rc else None
        return {"code": code, "reason": reason,
                "ok": code == 4401 and reason == "missing_token",
                "client_saw": str(e)}
    except Exception as e:  # handshake refused etc.
        return {"error": repr(e)}


def _read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def check_flood(a):
    path = os.path.join(a.state_dir, "flood.json")
    if os.path.exists(path):
        os.unlink(path)
    rss0 = tree_rss_kb(a.pid)
    status, headers, rest, s = ws_upgrade(a.port, "/ws/flood/")
    peak, samples = rss0, []
    t0 = time.monotonic()
    while time.monotonic() - t0 < 4.0:  # the app stops after 3 s by itself
        time.sleep(0.25)
        r = tree_rss_kb(a.pid)
        peak = max(peak, r)
        samples.append(r)
    st = None
    st = _read_json(path)
    s.close()
    time.sleep(1.0)
    return {"status": status, "frames_sent_by_app_in_3s": st and st["frames"],
            "app_hit_cap": st and st["hit_cap"], "app_loop_finished": st and st["finished"],
            "app_loop_s": st and round(st["elapsed"], 2),
            "mib_accepted_by_send": st and round(st["frames"] * 65536 / 2**20, 1),
            "rss_growth_mb": round((peak - rss0) / 1024, 1),
            "blocks": (st is not None and st["frames"] * 65536 < 32 * 2**20)}


async def check_slowreader(a):
    path = os.path.join(a.state_dir, "slow.json")
    rss0 = tree_rss_kb(a.pid)
    sent = 0
    payload = "y" * 65536
    ws = await connect(f"ws://{HOST}:{a.port}/ws/slow/", compression=None, ping_interval=None,
                       write_limit=65536, open_timeout=10, max_size=None)

    async def pump():
        nonlocal sent
        while sent < 3000:
            await ws.send(payload)
            sent += 1
    try:
        await asyncio.wait_for(pump(), 3.0)
    except (TimeoutError, ConnectionClosed):
        pass
    await asyncio.sleep(0.5)
    peak = tree_rss_kb(a.pid)
    st = _read_json(path)
    ws.transport.abort()
    await asyncio.sleep(1.0)
    return {"client_sends_completed_3s": sent, "mib_sent": round(sent * 65536 / 2**20, 1),
            "app_received": st and st["received"],
            "rss_growth_mb": round((peak - rss0) / 1024, 1),
            "server_stops_reading": sent * 65536 < 32 * 2**20}


def check_oversize(a):
    rss0 = tree_rss_kb(a.pid)
    status, headers, rest, s = ws_upgrade(a.port, "/ws/")
    s.setblocking(False)
    s.sendall(frame_header(0x1, 100_000_000))
    chunk = b"a" * 65536
    sent, buf, peak, eof = 0, rest, rss0, False
    info, t0, blocked = None, time.monotonic(), False
    while time.monotonic() - t0 < 6.0 and sent < 100_000_000:
        r, _, _ = select.select([s], [], [], 0.01)
        if r:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, BlockingIOError):
                data = b""
            if not data:
                eof = True
                break
            buf += data
            info = close_info(parse_frames(buf))
            if info:
                break
        try:
            sent += s.send(chunk)
        except BlockingIOError:
            blocked = True
        except (BrokenPipeError, ConnectionResetError):
            eof = True
            break
        peak = max(peak, tree_rss_kb(a.pid))
    t_close = round(time.monotonic() - t0, 2)
    # drain a bit more to catch a late close frame
    if not info and not eof:
        pass
    else:
        end = time.monotonic() + 1.0
        while not info and time.monotonic() < end:
            r, _, _ = select.select([s], [], [], 0.05)
            if r:
                try:
                    data = s.recv(65536)
                except OSError:
                    break
                if not data:
                    break
                buf += data
                info = close_info(parse_frames(buf))
    peak = max(peak, tree_rss_kb(a.pid))
    s.close()
    time.sleep(0.5)
    res = {"status": status, "payload_bytes_sent_before_end_mb": round(sent / 2**20, 1),
           "seconds": t_close, "socket_send_blocked": blocked,
           "rss_growth_mb": round((peak - rss0) / 1024, 1)}
    if info:
        res.update(info)
    elif eof:
        res["close_code"] = "none (TCP closed without close frame -> client sees 1006)"
    else:
        res["close_code"] = "none within 6 s (still buffering)"
    return res


def check_handshake(a):
    base = [f"Host: {HOST}:{a.port}", "Upgrade: websocket", "Connection: Upgrade"]
    key = f"Sec-WebSocket-Key: {GOOD_KEY}"
    cases = {
        "a_no_key": base + ["Sec-WebSocket-Version: 13"],
        "b_bad_key": base + ["Sec-WebSocket-Key: not-a-valid-key!", "Sec-WebSocket-Version: 13"],
        "c_no_version": base + [key],
        "d_version_8": base + [key, "Sec-WebSocket-Version: 8"],
        "e_plain_get": [f"Host: {HOST}:{a.port}"],
        "f_offer_deflate": base + [key, "Sec-WebSocket-Version: 13",
                                   "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"],
    }
    out = {}
    for name, hdrs in cases.items():
        try:
            status, headers, rest, s = raw_request(a.port, ["GET /ws/ HTTP/1.1", *hdrs])
            s.close()
        except OSError as e:
            out[name] = {"status": repr(e)}
            continue
        parts = status.split(" ", 2)
        r = {"status": " ".join(parts[1:]) if len(parts) > 1 else status}
        if "sec-websocket-version" in headers:
            r["sec_websocket_version"] = headers["sec-websocket-version"]
        if name == "f_offer_deflate":
            r["extensions"] = headers.get("sec-websocket-extensions", ["(none)"])
        out[name] = r
    return out


async def check_accesslog(a, log):
    log.mark()
    try:
        async with connect(f"ws://{HOST}:{a.port}/ws/?token=secret", compression=None,
                           ping_interval=None, open_timeout=10) as ws:
            await ws.send('{"message": "x"}')
            await asyncio.wait_for(ws.recv(), 5)
    except Exception as e:
        return {"error": repr(e)}
    await asyncio.sleep(1.0)
    lines = [ln for ln in log.new().splitlines() if "ws" in ln.lower() or "secret" in ln]
    leaks = [ln for ln in lines if "secret" in ln]
    return {"leaks_query_string": bool(leaks), "lines": lines[:4]}


def check_badutf8(a, log):
    log.mark()
    status, headers, rest, s = ws_upgrade(a.port, "/ws/")
    payload = b"\xff\xfe\xfd"
    s.sendall(frame_header(0x1, len(payload)) + payload)
    buf, info, end = rest, None, time.monotonic() + 3
    while not info and time.monotonic() < end:
        r, _, _ = select.select([s], [], [], 0.05)
        if r:
            try:
                d = s.recv(65536)
            except OSError:
                break
            if not d:
                break
            buf += d
            info = close_info(parse_frames(buf))
    s.close()
    time.sleep(1.0)
    new = log.new()
    return {**(info or {"close_code": "no close frame (client sees 1006)"}),
            "log_lines": len(new.splitlines()), "traceback_logged": "Traceback" in new}


async def main(a):
    log = Log(a.log)
    only = set(a.only.split(",")) if a.only else None
    res = {}

    def want(n):
        return only is None or n in only
    if want("close"):
        res["close"] = await check_close(a)
    if want("handshake"):
        res["handshake"] = check_handshake(a)
    if want("accesslog"):
        res["accesslog"] = await check_accesslog(a, log)
    if want("badutf8"):
        res["badutf8"] = check_badutf8(a, log)
    if want("oversize"):
        res["oversize"] = check_oversize(a)
    if want("flood"):
        res["flood"] = check_flood(a)
    if want("slowreader"):
        res["slowreader"] = await check_slowreader(a)
    print(json.dumps(res))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--pid", type=int, required=True, help="server PID (for /proc RSS)")
    ap.add_argument("--log", help="server log file (stdout+stderr)")
    ap.add_argument("--state-dir", default="/tmp/asgi-bench-state-8001",
                    help="BENCH_STATE_DIR the server was started with")
    ap.add_argument("--only", help="comma list: close,handshake,accesslog,badutf8,oversize,flood,slowreader")
    asyncio.run(main(ap.parse_args()))
