"""The bus: Redis -> replica traffic per envelope with 1, 2 and 3 replicas, and fan-out on a Redis Cluster.

Traffic: 1,000 users with one socket each, spread evenly over the replicas, and 10,000
envelopes published round-robin over them (2,500/s). Counted per envelope published: pub/sub
messages the replicas received (their `taskwire_bus_messages_received_total`, canaries
included) and bytes Redis wrote to all its clients (`total_net_output_bytes`: the publisher's
replies too, the same in every row). Baseline, same run and publisher: as many listeners
subscribed to the pattern `ws:user:*` as there are replicas, which is how replicas listened
until issue 18 (each one receives every envelope).

Cluster: fan-out to the same 1,000 sockets on one replica at 2,000/s, with the bus on one
Redis and on a three-primary Redis Cluster (sharded pub/sub); the broker stays one Redis.
"""

import asyncio
import multiprocessing
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import redis
import redis.asyncio as aioredis

from app.core.embedded_redis import EmbeddedRedis
from loadtests.bench import fanout, fleet
from loadtests.bench.stack import bench_stack
from tests.support.redis_cluster import LocalRedisCluster

SIZES = (1, 2, 3)
USERS = 1000
RATE = 2500
ENVELOPES = 10_000
# One publisher process through redis-py's cluster client reaches about 2,000/s here: both rows
# are offered what it can publish, so they compare the replica, not the publisher.
CLUSTER_RATE = 2000
PATTERN = "ws:user:*"  # what every replica subscribed to until issue 18


def _output_bytes(urls: list[str]) -> int:
    total = 0
    for url in urls:
        client = redis.Redis.from_url(url)
        total += int(client.info("stats")["total_net_output_bytes"])
        client.close()
    return total


def _received(ports: list[int]) -> float:
    total = 0.0
    for port in ports:
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        line = next(line for line in text.splitlines() if line.startswith("taskwire_bus_messages_received_total "))
        total += float(line.split()[1])
    return total


def _publish(redis_url: str, users: list[str]) -> None:
    context = multiprocessing.get_context("spawn")
    done: multiprocessing.Queue[tuple[float, float]] = context.Queue()
    publisher = context.Process(target=fanout._publish, args=("taskwire", redis_url, users, ENVELOPES, RATE, done))
    publisher.start()
    publisher.join()
    done.get()


def _pattern_listeners(redis_url: str, count: int, ready: Any, stop: Any, result: Any) -> None:
    """`count` connections subscribed to ws:user:*, as replicas were before issue 18; reports messages heard."""

    async def listen() -> None:
        client = aioredis.Redis.from_url(redis_url)
        pubsubs = [client.pubsub() for _ in range(count)]
        for pubsub in pubsubs:
            await pubsub.psubscribe(PATTERN)
            await pubsub.get_message(timeout=1)  # the psubscribe confirmation
        heard = 0
        ready.set()

        async def drain(pubsub: aioredis.client.PubSub) -> None:
            nonlocal heard
            while not stop.is_set():
                if await pubsub.get_message(timeout=0.2) is not None:
                    heard += 1

        await asyncio.gather(*(drain(pubsub) for pubsub in pubsubs))
        result.put(heard)
        for pubsub in pubsubs:
            await pubsub.aclose()
        await client.aclose()

    asyncio.run(listen())


def _pattern_baseline(replicas: int, users: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder, EmbeddedRedis(Path(folder)) as server:
        context = multiprocessing.get_context("spawn")
        ready, stop, result = context.Event(), context.Event(), context.Queue()
        listeners = context.Process(target=_pattern_listeners, args=(server.url, replicas, ready, stop, result))
        listeners.start()
        ready.wait(30)
        before = _output_bytes([server.url])
        _publish(server.url, users)
        time.sleep(1)  # let the listeners read the last ones
        after = _output_bytes([server.url])
        stop.set()
        heard = result.get(timeout=30)
        listeners.join()
    return {"messages_per_envelope": heard / ENVELOPES, "bytes_per_envelope": (after - before) / ENVELOPES}


async def _taskwire(replicas: int) -> dict[str, float]:
    with bench_stack(workers=0, replicas=replicas) as stack:
        tokens = fleet.mint_tokens(stack.env["JWT_SECRET"], USERS)
        users = list(tokens)
        ws_urls = stack.ws_urls()
        sockets = [(f"{ws_urls[i % replicas]}/ws/user/{user}", user) for i, user in enumerate(users)]
        clients = await fleet.open_fleet(sockets, fleet.taskwire_join(tokens), fleet.taskwire_parse)
        try:
            received_before, bytes_before = _received(stack.ports), _output_bytes([stack.redis_url])
            await asyncio.to_thread(_publish, stack.redis_url, users)
            for _ in range(200):  # up to 10 s for the last envelopes to arrive
                if len(clients.latencies) >= ENVELOPES:
                    break
                await asyncio.sleep(0.05)
            received_after, bytes_after = _received(stack.ports), _output_bytes([stack.redis_url])
            delivered = len(clients.latencies)
        finally:
            await clients.close()
    return {
        "messages_per_envelope": (received_after - received_before) / ENVELOPES,
        "bytes_per_envelope": (bytes_after - bytes_before) / ENVELOPES,
        "delivered": delivered / ENVELOPES,
    }


async def _fanout(cluster: LocalRedisCluster | None) -> list[dict[str, float]]:
    settings = {"BUS_REDIS_URL": cluster.url, "BUS_REDIS_CLUSTER": "true"} if cluster else {}
    with bench_stack(workers=0, **settings) as stack:
        tokens = fleet.mint_tokens(stack.env["JWT_SECRET"], USERS)
        users = list(tokens)
        system = fanout.System(
            "taskwire",
            [(f"{stack.ws_url}/ws/user/{user}", user) for user in users],
            fleet.taskwire_join(tokens),
            fleet.taskwire_parse,
            [stack.api_pid],
        )
        bus_url = cluster.url if cluster else stack.redis_url
        return await fanout.measure(system, bus_url, users, 1, rates=(CLUSTER_RATE,), cluster=cluster is not None)


async def run() -> dict[str, Any]:
    """Traffic rows per replica count, and fan-out rows on one Redis and on the cluster."""
    users = [str(uuid.uuid4()) for _ in range(USERS)]
    traffic = []
    for replicas in SIZES:
        traffic.append(
            {
                "replicas": replicas,
                "taskwire": await _taskwire(replicas),
                "pattern": await asyncio.to_thread(_pattern_baseline, replicas, users),
            }
        )
    with tempfile.TemporaryDirectory() as folder, LocalRedisCluster(Path(folder)) as cluster:
        on_cluster = await _fanout(cluster)
    return {"traffic": traffic, "fanout": {"one Redis": await _fanout(None), "Redis Cluster, 3 primaries": on_cluster}}
