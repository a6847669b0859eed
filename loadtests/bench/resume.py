"""Resume: replaying 1,000 missed envelopes on reconnect, against one raw XRANGE of them."""

import json
import statistics
import time

import httpx
import redis
from websockets.asyncio.client import connect

from app.realtime.envelopes import EnvelopeType, history_key
from app.realtime.publisher import EnvelopePublisher
from loadtests.bench.latency import new_account
from loadtests.bench.stack import BenchStack


async def run(stack: BenchStack) -> dict[str, float]:
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
        account = await new_account(http)
    client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
    publisher = EnvelopePublisher(client, history_maxlen=5000, history_ttl_s=3600)
    first = publisher.publish(account["participant_id"], EnvelopeType.CHAT_DELTA, "t", {"delta": "start"})
    for i in range(1000):
        publisher.publish(account["participant_id"], EnvelopeType.CHAT_DELTA, "t", {"delta": f"piece {i} " * 4})
    timings, raw = [], []
    for _ in range(5):
        started = time.perf_counter()
        async with connect(f"{stack.ws_url}/ws/user/{account['participant_id']}") as ws:
            await ws.send(json.dumps({"type": "auth", "token": account["access_token"], "last_id": first}))
            hello = json.loads(await ws.recv())
            assert hello["data"]["replayed"] == 1000, hello
            for _ in range(1000):
                await ws.recv()
        timings.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert len(client.xrange(history_key(account["participant_id"]), min=f"({first}")) == 1000
        raw.append(time.perf_counter() - started)
    client.close()
    return {"replay_ms": statistics.median(timings) * 1000, "xrange_ms": statistics.median(raw) * 1000}
