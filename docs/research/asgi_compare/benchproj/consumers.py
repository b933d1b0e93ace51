"""Consumers for the ASGI server comparison.

EchoConsumer       /ws/        tutorial-shaped JSON echo
CloseConsumer      /ws/close/  accept, then close(code=4401, reason="missing_token")
FloodConsumer      /ws/flood/  after accept, send 64 KiB text frames in a tight loop for
                               3 s (max 4096 frames = 256 MiB); writes the count to
                               $BENCH_STATE_DIR/flood.json
SlowReaderConsumer /ws/slow/   sleeps 0.5 s per received message (a slow reader)
"""
import asyncio
import json
import os
import time

from channels.generic.websocket import AsyncWebsocketConsumer

STATE_DIR = os.environ.get("BENCH_STATE_DIR", "/tmp/asgi-bench-state")
FLOOD_SECONDS = 3.0
FLOOD_MAX_FRAMES = 4096
FLOOD_PAYLOAD = "x" * 65536


def _write_state(name, data):
    os.makedirs(STATE_DIR, exist_ok=True)
    tmp = os.path.join(STATE_DIR, name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
    os.replace(tmp, os.path.join(STATE_DIR, name))


class EchoConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        if text_data is not None:
            data = json.loads(text_data)
            await self.send(text_data=json.dumps(data))
        else:
            await self.send(bytes_data=bytes_data)


class CloseConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        await self.close(code=4401, reason="missing_token")


class FloodConsumer(AsyncWebsocketConsumer):
    async def connect(self):
        await self.accept()
        t0 = time.monotonic()
        n = 0
        marks = {}
        while n < FLOOD_MAX_FRAMES:
            el = time.monotonic() - t0
            if el >= FLOOD_SECONDS:
                break
            await self.send(text_data=FLOOD_PAYLOAD)
            n += 1
            marks[str(int(el))] = n
            # progress after every frame: if send() blocks for good, the last count stays
            _write_state(
                "flood.json",
                {"frames": n, "elapsed": time.monotonic() - t0, "per_second": marks,
                 "hit_cap": n >= FLOOD_MAX_FRAMES, "finished": False},
            )
        _write_state(
            "flood.json",
            {"frames": n, "elapsed": time.monotonic() - t0, "per_second": marks,
             "hit_cap": n >= FLOOD_MAX_FRAMES, "finished": True},
        )


class SlowReaderConsumer(AsyncWebsocketConsumer):
    received = 0

    async def connect(self):
        await self.accept()

    async def receive(self, text_data=None, bytes_data=None):
        SlowReaderConsumer.received += 1
        _write_state("slow.json", {"received": SlowReaderConsumer.received})
        await asyncio.sleep(0.5)
