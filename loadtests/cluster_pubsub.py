"""What a Redis Cluster costs per published message: classic PUBLISH against Redis 7 SPUBLISH.

    python -m loadtests.cluster_pubsub --nodes 3 --messages 20000

Starts a throwaway cluster of ``--nodes`` masters on loopback (no replicas, no persistence),
subscribes one client to one channel on a node that does not own the channel's slot
(classic) or on the owner (sharded), publishes ``--messages`` messages of ``--size`` bytes in
pipelined batches to the owner, and prints one JSON line per mode: messages/s until the
subscriber has them all, and the CPU seconds each node spent. Classic pub/sub in a cluster
is forwarded to every node over the cluster bus; sharded pub/sub stays on the slot's owner.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import redis

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.e2e.redis_server import free_port  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
CHANNEL = "stream.room.lobby"


def _cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def _start_cluster(count: int, workdir: Path) -> tuple[list[int], list[subprocess.Popen[bytes]]]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is not installed"
    ports = [free_port() for _ in range(count)]
    procs = [
        subprocess.Popen(
            [
                binary,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
            ],
            cwd=workdir,
            stdout=(workdir / f"redis-{port}.log").open("wb"),
            stderr=subprocess.STDOUT,
        )
        for port in ports
    ]
    deadline = time.monotonic() + 30
    for port, proc in zip(ports, procs, strict=True):
        while True:
            try:
                redis.Redis(host="127.0.0.1", port=port).ping()
                break
            except redis.ConnectionError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    log = (workdir / f"redis-{port}.log").read_text()[-2000:]
                    raise RuntimeError(f"redis-server on {port} did not start:\n{log}") from None
                time.sleep(0.05)
    subprocess.run(
        [
            "redis-cli",
            "--cluster",
            "create",
            *[f"127.0.0.1:{p}" for p in ports],
            "--cluster-replicas",
            "0",
            "--cluster-yes",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    deadline = time.monotonic() + 30
    while any(redis.Redis(host="127.0.0.1", port=p).cluster("info")["cluster_state"] != "ok" for p in ports):
        if time.monotonic() > deadline:
            raise RuntimeError("cluster did not become ok")
        time.sleep(0.1)
    return ports, procs


def _owner(ports: list[int]) -> int:
    slot = redis.Redis(host="127.0.0.1", port=ports[0]).cluster("keyslot", CHANNEL)
    for start, end, master, *_ in redis.Redis(host="127.0.0.1", port=ports[0]).cluster("slots"):
        if start <= slot <= end:
            return int(master[1])
    raise RuntimeError("no owner")


def _run(mode: str, ports: list[int], procs: list[subprocess.Popen[bytes]], args: argparse.Namespace) -> dict[str, Any]:
    owner = _owner(ports)
    sub_port = owner if mode == "sharded" else next(p for p in ports if p != owner)
    sub_client: Any = redis.Redis(host="127.0.0.1", port=sub_port)  # redis-py's pubsub is untyped
    sub = sub_client.pubsub()
    (sub.ssubscribe if mode == "sharded" else sub.subscribe)(CHANNEL)
    sub.get_message(timeout=2)  # the subscribe confirmation
    got = 0
    done = threading.Event()

    def read() -> None:
        nonlocal got
        while got < args.messages:
            message = sub.get_message(timeout=5)
            if message is None:
                break
            if message["type"] in ("message", "smessage"):
                got += 1
        done.set()

    reader = threading.Thread(target=read)
    reader.start()
    payload = "x" * args.size
    command = "SPUBLISH" if mode == "sharded" else "PUBLISH"
    pub: Any = redis.Redis(host="127.0.0.1", port=owner)
    cpu0 = [_cpu(p.pid) for p in procs]
    t0 = time.monotonic()
    for start in range(0, args.messages, 100):
        pipe = pub.pipeline(transaction=False)
        for _ in range(min(100, args.messages - start)):
            pipe.execute_command(command, CHANNEL, payload)
        pipe.execute()
    done.wait(60)
    elapsed = time.monotonic() - t0
    reader.join(5)
    sub.close()
    cpu = [round(_cpu(p.pid) - c, 2) for p, c in zip(procs, cpu0, strict=True)]
    return {
        "mode": mode,
        "nodes": len(ports),
        "messages": args.messages,
        "received": got,
        "size": args.size,
        "messages_per_s": round(got / elapsed),
        "node_cpu_seconds": cpu,
        "owner_index": ports.index(owner),
        "subscriber_index": ports.index(sub_port),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--size", type=int, default=200)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="realtime-cluster-"))
    ports, procs = _start_cluster(args.nodes, workdir)
    try:
        for _ in range(args.runs):
            for mode in ("classic", "sharded"):
                print(json.dumps(_run(mode, ports, procs, args)), flush=True)
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
