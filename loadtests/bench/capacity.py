"""Capacity: idle sockets one replica holds, resident memory per socket, Redis connections.

Sockets are opened in steps (so memory per socket is a slope, not one point) by browser-like
clients that answer the app's pings. The baseline is the bare `websockets` server holding the
same number of sockets.
"""

import asyncio
import contextlib
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import redis

from app.core.processes import child_env, free_port, spawn, stop
from loadtests.bench import fleet
from loadtests.bench.stack import bench_stack, wait_ready

STEPS = (1000, 5000, 10000)


def rss_kib(pid: int) -> int:
    """Resident memory of a process, KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def _redis_view(redis_url: str) -> tuple[int, int]:
    """(client connections other than this one, pattern subscriptions) on the redis-server."""
    client = redis.Redis.from_url(redis_url)
    try:
        return len(client.client_list()) - 1, int(client.pubsub_numpat())
    finally:
        client.close()


async def _steps(
    pid: int, redis_url: str, sockets: list[tuple[str, str]], join: fleet.Join, parse: fleet.Parse, *, deflate: bool
) -> list[dict[str, float]]:
    """Open sockets up to each step; memory and Redis connections at each."""
    await asyncio.sleep(1)
    idle = rss_kib(pid)
    rows, fleets, opened = [], [], 0
    try:
        for step in STEPS:
            fleets.append(await fleet.open_fleet(sockets[opened:step], join, parse, deflate=deflate))
            opened = step
            await asyncio.sleep(2)  # let the server settle (buffers, GC)
            connections, patterns = _redis_view(redis_url)
            rss = rss_kib(pid)
            rows.append(
                {
                    "sockets": step,
                    "rss_mib": rss / 1024,
                    "kib_per_socket": (rss - idle) / step,
                    "redis_connections": connections,
                    "pattern_subscriptions": patterns,
                    "open": sum(1 for f in fleets for ws in f.sockets if ws.close_code is None),
                }
            )
    finally:
        for clients in fleets:
            await clients.close()
    return rows


async def taskwire(*, deflate: bool) -> list[dict[str, float]]:
    """Taskwire's API replica holding up to the last step's sockets (one per user)."""
    secret = "benchmark-secret"
    with bench_stack(workers=0, JWT_SECRET=secret, WS_PER_MESSAGE_DEFLATE=str(deflate).lower()) as stack:
        tokens = fleet.mint_tokens(secret, STEPS[-1])
        sockets = [(f"{stack.ws_url}/ws/user/{user}", user) for user in tokens]
        return await _steps(
            stack.api_pid, stack.redis_url, sockets, fleet.taskwire_join(tokens), fleet.taskwire_parse, deflate=deflate
        )


@contextlib.contextmanager
def _bare_server(redis_url: str) -> Iterator[tuple[int, int]]:
    port = free_port()
    process = spawn([sys.executable, "-m", "loadtests.bench.bare_ws", str(port)], env=child_env(REDIS_URL=redis_url))
    try:
        wait_ready(f"tcp://127.0.0.1:{port}")
        yield process.pid, port
    finally:
        stop(process)


async def bare(redis_url: str) -> list[dict[str, float]]:
    """The bare `websockets` server holding the same sockets."""
    with _bare_server(redis_url) as (pid, port):
        sockets = [(f"ws://127.0.0.1:{port}/u/{uuid.uuid4()}", "") for _ in range(STEPS[-1])]
        return await _steps(pid, redis_url, sockets, fleet.bare_join, fleet.bare_parse, deflate=False)
