"""How the API side grows with replicas: 1, 2 and 3 `taskwire api` processes, no worker.

For each size: closed-loop submit throughput with requests spread over the replicas, and
fan-out to 1,000 sockets spread over them at a fixed rate. Each replica subscribes only to the
users it holds sockets for (until issue 18, every replica received every envelope from a
pattern subscription). Redis connections are counted for the whole set.
"""

from typing import Any

import redis

from loadtests.bench import fanout, fleet, submit
from loadtests.bench.capacity import rss_kib
from loadtests.bench.stack import bench_stack

SIZES = (1, 2, 3)
FANOUT_RATE = 5000
SOCKETS = 1000


async def run() -> list[dict[str, Any]]:
    """One row per replica count."""
    rows = []
    for replicas in SIZES:
        with bench_stack(workers=0, replicas=replicas) as stack:
            urls = [f"http://127.0.0.1:{port}" for port in stack.ports]
            target = await submit.chat_target(*urls)
            await submit.throughput(target, duration_s=2)  # warm up
            before = sum(submit.cpu_seconds(api.pid) for api in stack.apis)
            result = await submit.throughput(target, duration_s=5)
            cpu_ms = (sum(submit.cpu_seconds(api.pid) for api in stack.apis) - before) * 1000 / result["requests"]

            tokens = fleet.mint_tokens(stack.env["JWT_SECRET"], SOCKETS)
            users = list(tokens)
            ws_urls = stack.ws_urls()
            sockets = [(f"{ws_urls[i % replicas]}/ws/user/{user}", user) for i, user in enumerate(users)]
            pids = [api.pid for api in stack.apis]
            system = fanout.System("taskwire", sockets, fleet.taskwire_join(tokens), fleet.taskwire_parse, pids)
            (delivery,) = await fanout.measure(system, stack.redis_url, users, 1, rates=(FANOUT_RATE,))

            client = redis.Redis.from_url(stack.redis_url)
            connections = len(client.client_list()) - 1
            client.close()
            rows.append(
                {
                    "replicas": replicas,
                    "submits_per_s": result["rps"],
                    "cpu_ms": cpu_ms,
                    "errors": result["errors"],
                    "fanout": delivery,
                    "rss_mib": sum(rss_kib(api.pid) for api in stack.apis) / 1024,
                    "redis_connections": connections,
                }
            )
    return rows
