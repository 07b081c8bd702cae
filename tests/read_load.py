"""A separate reading process for load tests: `python -m tests.read_load WS_URL TOKEN CHANNEL N`.

Prints `ready` once subscribed, then one JSON line with the latency quantiles of N events.
Kept out of the test process so its own load cannot colour what the client measures.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import time
from datetime import datetime

import websockets


async def main() -> None:
    url, token, channel, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    async with websockets.connect(f"{url}?token={token}", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"op": "subscribe", "channel": channel}))
        await ws.recv()
        print("ready", flush=True)
        latencies: list[float] = []
        while len(latencies) < count:
            raw = await ws.recv()
            received = time.time()
            if isinstance(raw, str) and raw.startswith('{"type":"event"'):
                ts = raw[raw.index('"ts":"') + 6 :].split('"', 1)[0]
                latencies.append(received - datetime.fromisoformat(ts).timestamp())
    quantiles = statistics.quantiles(latencies, n=100)
    print(json.dumps({"count": len(latencies), "p50": quantiles[49], "p99": quantiles[98]}))


if __name__ == "__main__":
    asyncio.run(main())
