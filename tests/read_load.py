"""A separate reading process for load tests: `python -m tests.read_load WS_URL TOKEN CHANNEL N`.

Prints `ready` once subscribed, then one JSON line with the seqs of the N events it read.
Kept out of the test process so its own load cannot slow what the client reads.
"""

from __future__ import annotations

import asyncio
import json
import sys

import websockets


async def main() -> None:
    url, token, channel, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    async with websockets.connect(f"{url}?token={token}", max_size=None) as ws:
        await ws.recv()
        await ws.send(json.dumps({"op": "subscribe", "channel": channel}))
        await ws.recv()
        print("ready", flush=True)
        seqs: list[int] = []
        while len(seqs) < count:
            frame = json.loads(await ws.recv())
            if frame["type"] == "event":
                seqs.append(frame["seq"])
    print(json.dumps({"seqs": seqs}))


if __name__ == "__main__":
    asyncio.run(main())
