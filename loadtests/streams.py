"""Stream modes: ``fanout`` (one publisher, S subscribers) and ``publish`` (persisted acks/s into one stream)."""

# ruff: noqa: ASYNC110 - bounded polling waits with explicit bounds, on purpose

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import time
import uuid
from typing import Any

import orjson

from loadtests.common import CpuMeter, latency_summary, per_cpu, proc_cpu_seconds
from loadtests.context import ERROR_PREFIX, BenchError, Context, subscribe_to
from loadtests.fastclient import FastClient, open_fast_client
from loadtests.wsclient import WsClient, close_all, open_client

NEW_PREFIX = b'{"event":"message.new"'
TEXT_KEY = b'"text":"'


def _template(tag: str, stream: str, text: bytes) -> bytes:
    """A ``message.send`` frame with ``%d`` in its id (and ``%s`` where ``text`` has it).

    Ids carry a per-run tag: the idempotency key (user, id) outlives a run in the shared database.
    """
    head = b'{"event":"message.send","id":"' + tag.encode() + b'%d","data":{"stream":"' + stream.encode()
    return head + b'","text":"' + text + b'"}}'


def _ranges(values: list[int]) -> list[list[int]]:
    """[[first, last], ...] runs of consecutive integers (short, for the JSON line)."""
    runs: list[list[int]] = []
    for value in values:
        if runs and value == runs[-1][1] + 1:
            runs[-1][1] = value
        else:
            runs.append([value, value])
    return runs[:20]


def _sent_at(data: bytes) -> float:
    """The send time the publisher put in the message text, without parsing the whole frame."""
    start = data.index(TEXT_KEY) + len(TEXT_KEY)
    return float(data[start : data.index(b'"', start)])


async def run_fanout(ctx: Context) -> dict[str, Any]:
    """P publishers send ``message.send`` (text = its send time) to a room that S connections follow.

    ``--rate 0`` keeps ``--window`` publishes in flight per publisher (the maximum); ``--rate R``
    publishes R messages/s on a fixed schedule, taking the publishers in turn. Deliveries/s are
    counted over ``--duration`` after ``--warmup``; publish-to-delivery latency is measured on
    deliveries in that window.
    """
    ctx.require_realtime("fanout")
    a = ctx.args
    RUN = uuid.uuid4().hex[:8]
    stream = f"room:fanout-{RUN}"
    t0 = time.monotonic()
    # Subscribers parse with picows: the Python parser would cap the generator below the target.
    subs = await ctx.open(a.subscribers, setup=subscribe_to(lambda _: stream), opener=open_fast_client)
    open_s = time.monotonic() - t0
    publishers = [await open_client(ctx.publish_url or ctx.url, ctx.token, welcome=True) for _ in range(a.publishers)]
    turn = itertools.cycle(publishers)
    latencies: list[float] = []
    state = {"deliveries": 0, "acks": 0, "errors": 0, "sent": 0, "measuring": 0, "sending": 1}
    window_start = [0.0]
    # Ids are unique per run: the idempotency key (user, id) outlives a run in the shared database.
    template = (
        b'{"event":"message.send","id":"f'
        + RUN.encode()
        + b'%d","data":{"stream":"'
        + stream.encode()
        + b'","text":"%s"}}'
    )

    acked: list[int] = []
    seen: list[int] = []  # offsets the first subscriber received, to name missing ones

    # Latency is sampled on every 8th subscriber: the same distribution, an eighth of the
    # load generator's work (it must stay far from being the bottleneck).
    first = subs[0]
    for i, sub in enumerate(subs):
        sub.state = i % 8 == 0

    def on_delivery(client: FastClient, data: bytes) -> None:
        if data.startswith(NEW_PREFIX):
            state["deliveries"] += 1
            if client.state:
                if client is first:
                    seen.append(orjson.loads(data)["offset"])
                if state["measuring"]:
                    sent = _sent_at(data)
                    if sent >= window_start[0]:
                        latencies.append(time.time() - sent)

    def publish(publisher: WsClient) -> None:
        n = state["sent"] = state["sent"] + 1
        text = f"{time.time():.6f}"
        publisher.send(template % (n, text.encode()))

    def on_ack(publisher: WsClient, data: bytes) -> None:
        if data.startswith(ERROR_PREFIX):
            state["errors"] += 1
        elif not data.startswith(b'{"event":"ack"'):
            return
        else:
            acked.append(orjson.loads(data)["data"]["offset"])
        state["acks"] += 1
        if a.rate == 0 and state["sending"] and state["sent"] < a.messages:
            publish(publisher)

    for sub in subs:
        sub.on_frame = on_delivery
    for publisher in publishers:
        publisher.on_frame = on_ack
    try:
        if a.rate == 0:
            for publisher in publishers:
                for _ in range(a.window):
                    publish(publisher)
        start = time.monotonic()
        measure_at, end = start + a.warmup, start + a.warmup + a.duration
        meter: CpuMeter | None = None
        others: dict[str, float] = {}
        measuring = False
        d0, t_measure = 0, start
        while time.monotonic() < end and state["sent"] < a.messages:
            if not measuring and time.monotonic() >= measure_at:
                measuring, state["measuring"] = True, 1
                meter = CpuMeter(ctx.pid).start() if ctx.pid else None
                others = {name: proc_cpu_seconds(pid) for name, pid in ctx.other_pids.items()}
                d0, t_measure, window_start[0] = state["deliveries"], time.monotonic(), time.time()
            if a.rate:
                due = min(a.messages, int((time.monotonic() - start) * a.rate) + 1)
                while state["sent"] < due:
                    publish(next(turn))
            await asyncio.sleep(0.001 if a.rate else 0.005)
        if not measuring:
            raise BenchError("the run ended before the measured window began: raise --messages or --duration")
        d1, t1 = state["deliveries"], time.monotonic()
        state["measuring"] = 0
        cpu = meter.stop() if meter else {}
        for name, pid in ctx.other_pids.items():
            cpu[f"{name}_cpu_pct"] = round(100 * (proc_cpu_seconds(pid) - others[name]) / (t1 - t_measure), 1)
        state["sending"] = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30.0):
                while state["acks"] < state["sent"] or state["deliveries"] < state["acks"] * len(subs):
                    await asyncio.sleep(0.02)
    finally:
        await close_all([*subs, *publishers], timeout=30.0)
    measured = t1 - t_measure
    return {
        "subscribers": a.subscribers,
        "publishers": a.publishers,
        "open_seconds": round(open_s, 2),
        "publish_rate": a.rate or f"closed loop, window {a.window}",
        "published": state["sent"],
        "acks": state["acks"],
        "error_replies": state["errors"],
        "deliveries_per_s": round((d1 - d0) / measured),
        "publishes_per_s": round((d1 - d0) / measured / max(1, a.subscribers), 1),
        "deliveries_per_server_cpu_s": per_cpu((d1 - d0) / measured, cpu),
        "deliveries_missing": state["acks"] * len(subs) - state["deliveries"],
        "first_subscriber_missing_offsets": _ranges(sorted(set(acked) - set(seen))),
        "first_subscriber_out_of_order": sum(1 for x, y in itertools.pairwise(seen) if y <= x),
        "closed_subscribers": sum(1 for sub in subs if sub.close_code is not None),
        "latency": latency_summary(latencies),
        **cpu,
    }


async def run_publish(ctx: Context) -> dict[str, Any]:
    """P publishers, each keeping ``--window`` persisted ``message.send`` in flight, into one stream.

    Every publish has its own ``id`` (the idempotency key is checked as in production);
    the acks' offsets must be gapless, which the result reports.
    """
    ctx.require_realtime("publish")
    a = ctx.args
    stream = f"room:publish-{uuid.uuid4().hex[:8]}"
    pubs = await ctx.open(a.publishers)
    offsets: list[int] = []
    latencies: list[float] = []
    state = {"acks": 0, "errors": 0, "sent": 0, "counting": 0, "sending": 1}
    first_error: list[bytes] = []
    run = uuid.uuid4().hex[:8].encode()
    template = (
        b'{"event":"message.send","id":"p'
        + run
        + b'%d","data":{"stream":"'
        + stream.encode()
        + b'","text":"bench %d"}}'
    )

    def publish(client: WsClient) -> None:
        n = state["sent"] = state["sent"] + 1
        client.state.append(time.monotonic())
        client.send(template % (n, n))

    def on_frame(client: WsClient, data: bytes) -> None:
        sent = client.state.popleft()
        if data.startswith(ERROR_PREFIX):
            state["errors"] += 1
            if not first_error:
                first_error.append(data[:300])
        else:
            offsets.append(orjson.loads(data)["data"]["offset"])
        if state["counting"]:
            state["acks"] += 1
            latencies.append(time.monotonic() - sent)
        if state["sending"]:
            publish(client)

    for client in pubs:
        client.state = collections.deque()
        client.on_frame = on_frame
    try:
        for client in pubs:
            for _ in range(a.window):
                publish(client)
        await asyncio.sleep(a.warmup)
        meter = CpuMeter(ctx.pid).start() if ctx.pid else None
        state["counting"], t0 = 1, time.monotonic()
        await asyncio.sleep(a.duration)
        state["counting"], t1 = 0, time.monotonic()
        cpu = meter.stop() if meter else {}
        state["sending"] = 0
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30.0):
                while len(offsets) + state["errors"] < state["sent"]:
                    await asyncio.sleep(0.02)
    finally:
        await close_all(pubs)
    ordered = sorted(offsets)
    gapless = bool(ordered) and ordered == list(range(ordered[0], ordered[0] + len(ordered)))
    return {
        "publishers": a.publishers,
        "window": a.window,
        "acks_per_s": round(state["acks"] / (t1 - t0)),
        "acks_per_server_cpu_s": per_cpu(state["acks"] / (t1 - t0), cpu),
        "acks": state["acks"],
        "published": state["sent"],
        "error_replies": state["errors"],
        "first_error": first_error[0].decode(errors="replace") if first_error else None,
        "offsets_gapless": gapless,
        "unacked": state["sent"] - len(offsets) - state["errors"],
        "ack_latency": latency_summary(latencies),
        **cpu,
    }
