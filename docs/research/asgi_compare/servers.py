#!/usr/bin/env python3
"""Start/stop the candidate ASGI servers (pinned with taskset) and read their RSS.

Used by loadgen-driving scripts; also runnable on its own to start one server:

    python servers.py --server uvicorn-sansio --port 8001 --seconds 30
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BIN = os.path.dirname(sys.executable)
APP = "benchproj.asgi:application"
MAX_SIZE = 1048576


def _uvicorn(ws):
    return lambda port: [
        os.path.join(BIN, "uvicorn"), APP, "--host", "127.0.0.1", "--port", str(port),
        "--ws", ws, "--ws-per-message-deflate", "false", "--ws-max-size", str(MAX_SIZE),
        "--loop", "uvloop", "--http", "httptools", "--lifespan", "off",
    ]


CANDIDATES = {
    "daphne": lambda port: [
        os.path.join(BIN, "daphne"), "-b", "127.0.0.1", "-p", str(port),
        "--websocket-max-message-size", str(MAX_SIZE),
        "--websocket-max-frame-size", str(MAX_SIZE),
        "--access-log", "-", APP,
    ],
    "uvicorn-sansio": _uvicorn("websockets-sansio"),
    "uvicorn-wsproto": _uvicorn("wsproto"),
    "uvicorn-websockets": _uvicorn("websockets"),
    "granian": lambda port: [
        os.path.join(BIN, "granian"), "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--runtime-threads", "1",
        "--loop", "uvloop", "--access-log", "--no-reload", APP,
    ],
    "hypercorn": lambda port: [
        os.path.join(BIN, "hypercorn"), "-b", f"127.0.0.1:{port}", "-k", "uvloop",
        "-c", "python:benchproj.hypercorn_conf", "--access-logfile", "-", APP,
    ],
}


def server_cmd(name, port, core="0"):
    return ["taskset", "-c", core] + CANDIDATES[name](port)


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return out


def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        todo += children(p)
    return pids


def vmrss_kb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return 0
    return 0


def tree_rss_kb(pid):
    """Sum of VmRSS over the server process and its children (granian/hypercorn fork a worker)."""
    return sum(vmrss_kb(p) for p in tree(pid))


class Server:
    def __init__(self, name, port, layer="inmemory", log_path=None, state_dir=None, core="0"):
        self.name, self.port, self.layer = name, port, layer
        self.log_path = log_path or f"/tmp/asgi-bench-{name}-{port}.log"
        self.state_dir = state_dir or f"/tmp/asgi-bench-state-{port}"
        self.core = core
        self.proc = None

    def start(self, timeout=30):
        env = dict(os.environ)
        env.update({
            "DJANGO_SETTINGS_MODULE": "benchproj.settings",
            "BENCH_LAYER": self.layer,
            "BENCH_STATE_DIR": self.state_dir,
            "PYTHONPATH": HERE,
            "PYTHONUNBUFFERED": "1",
        })
        os.makedirs(self.state_dir, exist_ok=True)
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            server_cmd(self.name, self.port, self.core), cwd=HERE, env=env,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited early, see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                time.sleep(1.0)  # let workers finish importing Django
                return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"{self.name} did not listen on {self.port}")

    @property
    def pid(self):
        return self.proc.pid

    def rss_kb(self):
        return tree_rss_kb(self.proc.pid)

    def log_text(self):
        self.log.flush()
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # only our own session
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
            except ProcessLookupError:
                pass
        if getattr(self, "log", None):
            self.log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--server", choices=sorted(CANDIDATES), required=True)
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--layer", choices=["inmemory", "none"], default="inmemory")
    ap.add_argument("--seconds", type=float, default=30, help="stop after this long (bounded)")
    ap.add_argument("--print-cmd", action="store_true", help="only print the command")
    a = ap.parse_args()
    if a.print_cmd:
        print(" ".join(server_cmd(a.server, a.port)))
        sys.exit(0)
    with Server(a.server, a.port, a.layer) as s:
        print(f"{a.server} pid {s.pid} on 127.0.0.1:{a.port}, log {s.log_path}; stopping in {a.seconds}s")
        time.sleep(a.seconds)
