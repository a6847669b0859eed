"""Submit throughput and open-loop latency of `POST /ai/chat2`, against a bare enqueue endpoint.

Closed-loop timings hide queueing (a slow answer delays the next request), so latency is
measured open loop: requests are sent on a fixed schedule and timed from their intended
send time. Throughput is measured closed loop with many connections kept busy.
"""

import asyncio
import os
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from loadtests.bench.stats import percentile_ms

USERS = 50  # the submitting accounts; requests rotate over them so per-user work is realistic


@dataclass
class Target:
    """Where to send submits: URLs (one per replica, taken in turn) and each request's headers and body."""

    urls: list[str]
    request: Callable[[int], tuple[dict[str, str], dict[str, Any]]]

    def url(self, i: int) -> str:
        return self.urls[i % len(self.urls)]


async def chat_target(base_url: str, *more_replicas: str) -> Target:
    """`POST /ai/chat2` as USERS different learners, spread over the replicas given."""
    async with aiohttp.ClientSession() as http:
        tokens = []
        for _ in range(USERS):
            body = {"username": f"s{uuid.uuid4().hex[:12]}", "password": "benchmark-password"}
            async with http.post(f"{base_url}/api/auth/register", json=body) as response:
                tokens.append((await response.json())["access_token"])

    def request(i: int) -> tuple[dict[str, str], dict[str, Any]]:
        return {"Authorization": f"Bearer {tokens[i % USERS]}"}, {"message": "benchmark"}

    return Target([f"{url}/ai/chat2" for url in (base_url, *more_replicas)], request)


def baseline_target(base_url: str) -> Target:
    """The bare FastAPI + Celery enqueue endpoint."""
    return Target([f"{base_url}/enqueue"], lambda _i: ({}, {}))


async def _send(http: aiohttp.ClientSession, target: Target, i: int) -> int:
    headers, body = target.request(i)
    async with http.post(target.url(i), json=body, headers=headers) as response:
        await response.read()
        return response.status


async def throughput(target: Target, *, connections: int = 64, duration_s: float = 5) -> dict[str, float]:
    """Requests per second with `connections` requests always in flight; errors counted."""
    done = errors = 0
    counter = iter(range(10**9))
    deadline = time.perf_counter() + duration_s
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def loop() -> None:
            nonlocal done, errors
            while time.perf_counter() < deadline:
                status = await _send(http, target, next(counter))
                done += 1
                errors += status != 202

        started = time.perf_counter()
        await asyncio.gather(*(loop() for _ in range(connections)))
        elapsed = time.perf_counter() - started
    return {"rps": done / elapsed, "errors": errors, "requests": done}


async def open_loop(target: Target, *, rate: float, duration_s: float = 5) -> dict[str, float]:
    """Send `rate` requests per second on schedule; latency counts from each intended send time."""
    latencies: list[float] = []
    failures: Counter[str] = Counter()  # what each error was: an HTTP status, or the client's exception
    connector = aiohttp.TCPConnector(limit=1000)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def one(i: int, intended: float) -> None:
            try:
                status = await _send(http, target, i)
                if status != 202:
                    failures[str(status)] += 1
            except aiohttp.ClientError as exc:
                failures[type(exc).__name__] += 1
            latencies.append(time.perf_counter() - intended)

        start = time.perf_counter() + 0.1
        pending = []
        for i in range(int(rate * duration_s)):
            intended = start + i / rate
            delay = intended - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(i, intended)))
        await asyncio.gather(*pending)
    return {
        "rate": rate,
        "requests": len(latencies),
        "errors": sum(failures.values()),
        "error_kinds": dict(failures),
        "p50": percentile_ms(latencies, 50),
        "p99": percentile_ms(latencies, 99),
    }


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


OPEN_LOOP_RATES = (100, 200, 400)


async def run(base_url: str, api_pid: int, baseline_url: str, baseline_pid: int) -> dict[str, Any]:
    """Throughput, CPU per request and open-loop latency, for Taskwire and the bare enqueue."""
    chat, bare = await chat_target(base_url), baseline_target(baseline_url)
    await throughput(chat, duration_s=2)  # warm up: connections, caches, the SQLite file
    await throughput(bare, duration_s=2)
    out: dict[str, Any] = {}
    for name, target, pid in (("taskwire", chat, api_pid), ("baseline", bare, baseline_pid)):
        before = cpu_seconds(pid)
        result = await throughput(target, duration_s=5)
        result["cpu_ms"] = (cpu_seconds(pid) - before) * 1000 / result["requests"]
        out[name] = {"throughput": result, "open_loop": []}
    for rate in OPEN_LOOP_RATES:
        for name, target in (("taskwire", chat), ("baseline", bare)):
            out[name]["open_loop"].append(await open_loop(target, rate=rate))
    return out
