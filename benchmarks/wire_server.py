"""The wire floor: the least a Python relay on uvloop can spend per event and per frame.

No ASGI server and no WebSocket library: a hand-written handshake, and each pub/sub message
framed once and written with `transport.write` to every socket of its channel, in the read
callback of a raw pub/sub connection parsed by hiredis. No flow control, no keep-alive, no
queue: what is left is uvloop, the system calls and a Python loop over the sockets, the part
of a frame no relay written in Python can skip. It speaks just enough of taskcast's /ws
contract for the load clients (and the floor's event frames); run it with
`python wire_server.py <port>`, `REDIS_URL` in the environment.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
import sys
from typing import cast
from urllib.parse import urlparse

import hiredis
import orjson
import uvloop

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 section 1.3


def frame(opcode: int, payload: bytes) -> bytes:
    """An unmasked server frame (RFC 6455 section 5.2)."""
    size = len(payload)
    if size < 126:
        return bytes((0x80 | opcode, size)) + payload
    if size < 65536:
        return struct.pack("!BBH", 0x80 | opcode, 126, size) + payload
    return struct.pack("!BBQ", 0x80 | opcode, 127, size) + payload


class Relay(asyncio.Protocol):
    """The pub/sub connection and the channel -> sockets map."""

    def __init__(self) -> None:
        self.channels: dict[str, list[asyncio.Transport]] = {}
        self.seq: dict[str, int] = {}
        self.parser = hiredis.Reader(encoding="utf-8")
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def join(self, channel: str, transport: asyncio.Transport) -> int:
        sockets = self.channels.get(channel)
        if sockets is None:
            sockets = self.channels[channel] = []
            assert self.transport is not None
            self.transport.write(hiredis.pack_command(("SUBSCRIBE", channel)))
        sockets.append(transport)
        return self.seq.get(channel, 0)

    def leave(self, channel: str, transport: asyncio.Transport) -> None:
        sockets = self.channels.get(channel, [])
        if transport in sockets:
            sockets.remove(transport)

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        while (reply := self.parser.gets()) is not False:
            if reply[0] != "message":
                continue
            channel, event = reply[1], reply[2]
            seq = self.seq.get(channel, 0) + 1
            self.seq[channel] = seq
            text = f'{{"type":"event","channel":"{channel}","seq":{seq},"event":{event}}}'
            wire = frame(0x1, text.encode())
            for transport in self.channels.get(channel, ()):
                transport.write(wire)


class Socket(asyncio.Protocol):
    """One client connection: the HTTP upgrade, then masked client frames."""

    def __init__(self, relay: Relay) -> None:
        self.relay = relay
        self.buffer = b""
        self.upgraded = False
        self.joined: list[str] = []
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's does not subclass it

    def connection_lost(self, exc: Exception | None) -> None:
        assert self.transport is not None
        for channel in self.joined:
            self.relay.leave(channel, self.transport)

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            self._upgrade()
        while self.upgraded and self._frame():
            pass

    def _upgrade(self) -> None:
        assert self.transport is not None
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        lines = head.decode("latin-1").split("\r\n")
        headers = dict(
            (name.strip().lower(), value.strip())
            for name, _, value in (line.partition(":") for line in lines[1:])
        )
        key = headers.get("sec-websocket-key")
        if key is None:  # a readiness check
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            self.transport.close()
            return
        accept = base64.b64encode(
            hashlib.sha1(key.encode() + _GUID, usedforsecurity=False).digest()
        )
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        self.buffer, self.upgraded = rest, True

    def _frame(self) -> bool:
        """Handle one complete client frame from the buffer; False if none is complete."""
        assert self.transport is not None
        buf = self.buffer
        if len(buf) < 2:
            return False
        opcode, size, at = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if size == 126:
            if len(buf) < 4:
                return False
            size, at = struct.unpack_from("!H", buf, 2)[0], 4
        elif size == 127:
            if len(buf) < 10:
                return False
            size, at = struct.unpack_from("!Q", buf, 2)[0], 10
        if len(buf) < at + 4 + size:
            return False
        mask = buf[at : at + 4]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[at + 4 : at + 4 + size]))
        self.buffer = buf[at + 4 + size :]
        if opcode == 0x1:
            channel = orjson.loads(payload)["channel"]
            seq = self.relay.join(channel, self.transport)
            self.joined.append(channel)
            reply = {"type": "subscribed", "channel": channel, "seq": seq}
            self.transport.write(frame(0x1, orjson.dumps(reply)))
        elif opcode == 0x9:
            self.transport.write(frame(0xA, payload))
        elif opcode == 0x8:
            self.transport.write(frame(0x8, payload[:2]))
            self.transport.close()
        return True


async def serve(port: int, redis_url: str) -> None:
    loop = asyncio.get_running_loop()
    url = urlparse(redis_url)
    _, relay = await loop.create_connection(Relay, url.hostname or "127.0.0.1", url.port or 6379)
    server = await loop.create_server(lambda: Socket(relay), "127.0.0.1", port, backlog=4096)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(serve(int(sys.argv[1]), os.environ["REDIS_URL"]))
