"""Many WebSocket clients in one process, for Taskwire and the two fan-out baselines alike.

Every published message carries its publish time `t` (time.time()); each client records the
latency at which it arrives. The three systems differ only in how a client joins and how a
message is framed, so the same client code measures all of them.
"""

import asyncio
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from app.core.config import Settings
from app.core.security import create_access_token

Join = Callable[[ClientConnection, str], Awaitable[None]]
Parse = Callable[[ClientConnection, str], Awaitable[float | None]]  # the message's `t`, or None


@dataclass
class Fleet:
    """Open sockets and what they received."""

    sockets: list[ClientConnection] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    last_arrival: float = 0.0  # time.time() of the newest message
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    def reset(self) -> None:
        self.latencies = []

    async def close(self) -> None:
        for reader in self.readers:
            reader.cancel()
        await asyncio.gather(*(ws.close() for ws in self.sockets), return_exceptions=True)


async def open_fleet(
    urls: list[tuple[str, str]], join: Join, parse: Parse, *, at_once: int = 200, deflate: bool = False
) -> Fleet:
    """Connect one socket per (url, user), `at_once` handshakes in flight, and start reading.

    With `deflate` the clients offer permessage-deflate, as browsers do.
    """
    fleet = Fleet()
    gate = asyncio.Semaphore(at_once)

    async def one(url: str, user: str) -> None:
        async with gate:
            compression = "deflate" if deflate else None
            ws = await connect(url, compression=compression, ping_interval=None, max_queue=None, open_timeout=60)
            await join(ws, user)
        fleet.sockets.append(ws)
        fleet.readers.append(asyncio.create_task(_read(ws, parse, fleet)))

    await asyncio.gather(*(one(url, user) for url, user in urls))
    return fleet


async def _read(ws: ClientConnection, parse: Parse, fleet: Fleet) -> None:
    async for raw in ws:
        sent = await parse(ws, raw if isinstance(raw, str) else raw.decode())
        if sent is not None:
            fleet.last_arrival = time.time()
            fleet.latencies.append(fleet.last_arrival - sent)


def mint_tokens(jwt_secret: str, count: int) -> dict[str, str]:
    """`count` made-up participant ids with valid tokens: sockets need no account in the database."""
    settings = Settings(jwt_secret=jwt_secret)
    return {str(user): create_access_token(user, settings) for user in (uuid.uuid4() for _ in range(count))}


# Taskwire: first-frame auth, then envelopes; the app-level ping is answered.
def taskwire_join(tokens: dict[str, str]) -> Join:
    async def join(ws: ClientConnection, user: str) -> None:
        await ws.send(json.dumps({"type": "auth", "token": tokens[user]}))
        hello = json.loads(await ws.recv())
        assert hello["type"] == "hello", hello

    return join


async def taskwire_parse(ws: ClientConnection, raw: str) -> float | None:
    frame: dict[str, Any] = json.loads(raw)
    if frame["type"] == "ping":
        await ws.send('{"type":"pong"}')
        return None
    return float(frame["data"]["t"])


# python-socketio: the Engine.IO open packet, a namespace connect with the user as auth, then
# `42["m",{...}]` events; Engine.IO pings ("2") are answered ("3").
async def socketio_join(ws: ClientConnection, user: str) -> None:
    opened = await ws.recv()
    assert str(opened).startswith("0"), opened
    await ws.send("40" + json.dumps({"user": user}))
    connected = await ws.recv()
    assert str(connected).startswith("40"), connected


async def socketio_parse(ws: ClientConnection, raw: str) -> float | None:
    if raw == "2":
        await ws.send("3")
        return None
    if not raw.startswith("42"):
        return None
    _event, data = json.loads(raw[2:])
    return float(data["t"])


async def bare_join(_ws: ClientConnection, _user: str) -> None:
    return None


async def bare_parse(_ws: ClientConnection, raw: str) -> float | None:
    return float(json.loads(raw)["t"])
