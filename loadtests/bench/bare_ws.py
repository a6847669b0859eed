"""Fan-out ceiling: a bare `websockets` server forwarding Redis pub/sub messages to sockets.

One pattern subscription, sockets by user, each message sent as it came: no auth, no history,
no envelopes, no per-socket queues. Nothing a real service can do without; the raw ceiling.
Run by the benchmark as `python -m loadtests.bench.bare_ws PORT`, with REDIS_URL set.
"""

import asyncio
import os
import sys
from collections import defaultdict

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve

CHANNEL_PREFIX = "bare:user:"
sockets: dict[str, set[ServerConnection]] = defaultdict(set)


async def handler(websocket: ServerConnection) -> None:
    user = (websocket.request.path if websocket.request else "/").rsplit("/", 1)[-1]
    sockets[user].add(websocket)
    try:
        await websocket.wait_closed()
    finally:
        sockets[user].discard(websocket)


async def forward(url: str) -> None:
    client = aioredis.Redis.from_url(url)
    pubsub = client.pubsub()
    await pubsub.psubscribe(f"{CHANNEL_PREFIX}*")
    async for message in pubsub.listen():
        if message["type"] != "pmessage":
            continue
        user = message["channel"].decode()[len(CHANNEL_PREFIX) :]
        for websocket in list(sockets.get(user, ())):
            # The websockets library buffers the write; there is no per-socket task.
            await websocket.send(message["data"].decode())


async def main(port: int) -> None:
    async with serve(handler, "127.0.0.1", port, compression=None, ping_interval=None):
        await forward(os.environ["REDIS_URL"])


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
