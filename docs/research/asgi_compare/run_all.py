#!/usr/bin/env python3
"""Run the whole comparison: throughput, idle RSS and behaviour checks for each candidate.

Each server is started pinned to core 0 (taskset -c 0); every client script runs pinned to
core 1. Results go to --out as JSON; a summary is printed. Everything is loopback-only and
bounded in time; every server started here is stopped before the next one starts.

    python run_all.py --out results.json                      # everything (~20 min on 2 cores)
    python run_all.py --candidates uvicorn-sansio --what checks
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from servers import CANDIDATES, Server, server_cmd

HERE = os.path.dirname(os.path.abspath(__file__))
PY = sys.executable
_port = [18000]


def next_port():
    _port[0] += 1
    return _port[0]


def client(args, timeout):
    cmd = ["taskset", "-c", "1", PY] + args
    r = subprocess.run(cmd, cwd=HERE, capture_output=True, text=True, timeout=timeout)
    try:
        return json.loads(r.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {"error": (r.stderr or r.stdout)[-800:]}


def med(xs):
    xs = [x for x in xs if isinstance(x, (int, float))]
    return statistics.median(xs) if xs else None


def throughput(name, layer, a):
    port = next_port()
    runs = []
    with Server(name, port, layer) as s:
        for _ in range(a.runs):
            runs.append(client(["loadgen.py", "--url", f"ws://127.0.0.1:{port}/ws/",
                                "--conns", str(a.conns), "--window", str(a.window),
                                "--warmup", "2", "--seconds", str(a.seconds)], 120))
    vals = [r.get("msg_per_s") for r in runs]
    return {"median": med(vals), "runs": vals, "errors": [r for r in runs if "error" in r or r.get("n_errors")]}


def idle(name, n, a):
    runs = []
    for _ in range(a.runs):
        port = next_port()
        with Server(name, port, a.idle_layer) as s:
            runs.append(client(["idle_rss.py", "--url", f"ws://127.0.0.1:{port}/ws/",
                                "--pid", str(s.pid), "--conns", str(n)], 300))
    vals = [r.get("kb_per_conn") for r in runs]
    return {"median_kb": med(vals), "runs": vals,
            "open_seconds": [r.get("open_seconds") for r in runs],
            "errors": [r for r in runs if "error" in r]}


def checks(name, a):
    port = next_port()
    with Server(name, port, "inmemory") as s:
        return client(["checks.py", "--port", str(port), "--pid", str(s.pid), "--log", s.log_path,
                       "--state-dir", s.state_dir], 180)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--candidates", default=",".join(CANDIDATES))
    ap.add_argument("--what", default="throughput,idle,checks")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6.0, help="measured seconds per throughput run")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--window", type=int, default=8)
    ap.add_argument("--idle-conns", default="1000,5000")
    ap.add_argument("--idle-layer", default="inmemory", choices=["inmemory", "none"])
    ap.add_argument("--out", default=os.path.join(HERE, "results.json"))
    a = ap.parse_args()
    what = a.what.split(",")
    results = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "nproc": os.cpu_count(),
               "args": vars(a), "commands": {}, "servers": {}}
    for name in a.candidates.split(","):
        results["commands"][name] = " ".join(server_cmd(name, 8001))
        r = results["servers"].setdefault(name, {})
        if "throughput" in what:
            for layer in ("inmemory", "none"):
                r[f"throughput_{layer}"] = throughput(name, layer, a)
                print(name, layer, r[f"throughput_{layer}"], flush=True)
        if "idle" in what:
            for n in [int(x) for x in a.idle_conns.split(",")]:
                r[f"idle_{n}"] = idle(name, n, a)
                print(name, "idle", n, r[f"idle_{n}"], flush=True)
        if "checks" in what:
            r["checks"] = checks(name, a)
            print(name, "checks", json.dumps(r["checks"]), flush=True)
        with open(a.out, "w") as f:
            json.dump(results, f, indent=1)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
