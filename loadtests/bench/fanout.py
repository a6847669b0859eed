"""Fan-out: messages per second one replica delivers to 1,000 sockets, and Redis -> socket latency.

The same publisher (a separate process, paced to an offered rate of deliveries per second)
and the same client fleet measure four servers, one at a time, on the same redis-server:
Taskwire's API replica, the same with its bus read window off (BUS_READ_WINDOW_MS=0: what the
window buys, and what it costs in latency), a plain python-socketio server with its Redis
manager, and a bare `websockets` loop forwarding pub/sub messages (the raw ceiling).
"""

import asyncio
import contextlib
import json
import multiprocessing
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import redis
from redis.cluster import RedisCluster

from app.core.processes import child_env, free_port, spawn, stop
from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import EnvelopePublisher
from loadtests.bench import fleet
from loadtests.bench.stack import CLI, BenchStack, wait_ready
from loadtests.bench.stats import percentile_ms
from loadtests.bench.submit import cpu_seconds

SHAPES = ((1000, 1), (100, 10))  # users x sockets per user: 1,000 sockets either way
RATES = (1000, 2500, 5000, 10000)  # deliveries per second offered
DURATION_S = 4.0
GRACE_S = 3.0
PAYLOAD = "x" * 60  # about the size of a streamed chat piece


@dataclass
class System:
    name: str
    urls: list[tuple[str, str]]  # (socket url, user) per socket
    join: fleet.Join
    parse: fleet.Parse
    pids: list[int]  # the server processes, whose CPU time per delivery is measured


def _publish(
    system: str,
    redis_url: str,
    users: list[str],
    count: int,
    rate: float,
    done: "multiprocessing.Queue[tuple[float, float]]",
    cluster: bool = False,
) -> None:
    """Publish `count` messages round-robin over `users` at `rate` per second; report (start time, seconds taken).

    With `cluster`, `redis_url` is a seed node of the bus's Redis Cluster (Taskwire only)."""
    client = RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    if system == "taskwire":
        publisher = EnvelopePublisher(client, history_maxlen=1000, history_ttl_s=600)  # type: ignore[arg-type]

        def send(user: str) -> None:
            publisher.publish(user, EnvelopeType.CHAT_DELTA, "bench", {"delta": PAYLOAD, "t": time.time()})

    elif system == "python-socketio":
        import socketio

        manager = socketio.RedisManager(redis_url, write_only=True)

        def send(user: str) -> None:
            manager.emit("m", {"delta": PAYLOAD, "t": time.time()}, room=user, namespace="/")

    else:

        def send(user: str) -> None:
            client.publish(f"bare:user:{user}", json.dumps({"delta": PAYLOAD, "t": time.time()}))

    started_at, start = time.time(), time.perf_counter()
    for i in range(count):
        ahead = start + i / rate - time.perf_counter()
        if ahead > 0:
            time.sleep(ahead)
        send(users[i % len(users)])
    done.put((started_at, time.perf_counter() - start))


async def measure(
    system: System,
    redis_url: str,
    users: list[str],
    sockets_per_user: int,
    rates: tuple[int, ...] = RATES,
    *,
    cluster: bool = False,
) -> list[dict[str, float]]:
    """Open the fleet, then offer each rate for DURATION_S; one row per rate."""
    clients = await fleet.open_fleet(system.urls, system.join, system.parse)
    rows = []
    context = multiprocessing.get_context("spawn")
    try:
        for rate in rates:
            clients.reset()
            messages = int(rate / sockets_per_user * DURATION_S)
            expected = messages * sockets_per_user
            done: multiprocessing.Queue[tuple[float, float]] = context.Queue()
            args = (system.name, redis_url, users, messages, rate / sockets_per_user, done, cluster)
            publisher = context.Process(target=_publish, args=args)
            cpu_before = sum(cpu_seconds(pid) for pid in system.pids)
            publisher.start()
            started = time.perf_counter()
            while publisher.is_alive() or len(clients.latencies) < expected:
                await asyncio.sleep(0.05)
                if not publisher.is_alive() and time.perf_counter() - started > DURATION_S * 3 + GRACE_S:
                    break
            publisher.join()
            cpu_used = sum(cpu_seconds(pid) for pid in system.pids) - cpu_before
            published_at, publish_s = done.get()
            received = list(clients.latencies)
            # Delivery rate over the publishing window, or longer when the server lagged behind it.
            elapsed = max(publish_s, clients.last_arrival - published_at)
            rows.append(
                {
                    "offered": rate,
                    "published_per_s": expected / publish_s,
                    "delivered_per_s": len(received) / elapsed,
                    "delivered": len(received) / expected,
                    "p50": percentile_ms(received, 50),
                    "p99": percentile_ms(received, 99),
                    # Server CPU per delivery: what one core could deliver, without saturating it.
                    "cpu_us": cpu_used * 1e6 / max(1, len(received)),
                }
            )
    finally:
        await clients.close()
    return rows


@contextlib.contextmanager
def _server(args: list[str], env: dict[str, str], ready_url: str) -> Iterator[int]:
    process = spawn(args, env=env)
    try:
        wait_ready(ready_url)
        yield process.pid
    finally:
        stop(process)


UNPACED = "taskwire (no read window)"  # BUS_READ_WINDOW_MS=0
RATIO_RATE = 5000  # deliveries/s at which the per-core ratios are taken
RATIO_ROUNDS = 3  # each system measured this many times, in turn, for the ratios


async def run(stack: BenchStack, jwt_secret: str) -> dict[str, Any]:
    """Every shape on every system; rows keyed by "system, users x sockets", and under "ratio
    rounds" the CPU per delivery of each system at RATIO_RATE, measured in turn RATIO_ROUNDS times.

    One sweep per system is at the mercy of whatever else the machine did in those seconds (the
    bare loop's figure moved by half between runs an hour apart); systems measured in turn, with
    all the servers up, share that noise, and the median of the rounds keeps one bad step out.
    """
    results: dict[str, Any] = {}
    rounds: dict[str, dict[str, list[float]]] = {}
    for user_count, per_user in SHAPES:
        tokens = fleet.mint_tokens(jwt_secret, user_count)
        users = list(tokens)
        shape = f"{user_count} x {per_user}"
        sockets = [user for user in users for _ in range(per_user)]
        socketio_port, bare_port, unpaced_port = free_port(), free_port(), free_port()
        socketio_args = [
            sys.executable,
            "-m",
            "uvicorn",
            "loadtests.bench.socketio_app:app",
            "--port",
            str(socketio_port),
        ]
        with (
            _server(
                [*CLI, "api", "--port", str(unpaced_port)],
                {**stack.env, "BUS_READ_WINDOW_MS": "0"},
                f"http://127.0.0.1:{unpaced_port}/readyz",
            ) as unpaced_pid,
            _server(
                [*socketio_args, "--log-level", "warning"],
                child_env(REDIS_URL=stack.redis_url),
                f"http://127.0.0.1:{socketio_port}/socket.io/?EIO=4&transport=polling",
            ) as socketio_pid,
            _server(
                [sys.executable, "-m", "loadtests.bench.bare_ws", str(bare_port)],
                child_env(REDIS_URL=stack.redis_url),
                f"tcp://127.0.0.1:{bare_port}",
            ) as bare_pid,
        ):
            socketio_url = f"ws://127.0.0.1:{socketio_port}/socket.io/?EIO=4&transport=websocket"
            systems = {
                "taskwire": System(
                    "taskwire",
                    [(f"{stack.ws_url}/ws/user/{user}", user) for user in sockets],
                    fleet.taskwire_join(tokens),
                    fleet.taskwire_parse,
                    [stack.api_pid],
                ),
                UNPACED: System(
                    "taskwire",
                    [(f"ws://127.0.0.1:{unpaced_port}/ws/user/{user}", user) for user in sockets],
                    fleet.taskwire_join(tokens),
                    fleet.taskwire_parse,
                    [unpaced_pid],
                ),
                "python-socketio": System(
                    "python-socketio",
                    [(socketio_url, user) for user in sockets],
                    fleet.socketio_join,
                    fleet.socketio_parse,
                    [socketio_pid],
                ),
                "bare websockets": System(
                    "bare",
                    [(f"ws://127.0.0.1:{bare_port}/u/{user}", user) for user in sockets],
                    fleet.bare_join,
                    fleet.bare_parse,
                    [bare_pid],
                ),
            }
            for label, system in systems.items():
                results[f"{label}, {shape}"] = await measure(system, stack.redis_url, users, per_user)
            rounds[shape] = {label: [] for label in systems}
            for _ in range(RATIO_ROUNDS):
                for label, system in systems.items():
                    (row,) = await measure(system, stack.redis_url, users, per_user, (RATIO_RATE,))
                    rounds[shape][label].append(row["cpu_us"])
    results["ratio rounds"] = rounds
    return results
