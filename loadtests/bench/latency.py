"""End-to-end latency of a no-delay offline chat: closed loop by users, and open loop by rate.

Closed loop: each of N users sends chats one after another and waits for each result.
Open loop: one learner submits on a fixed schedule; submit -> result is timed from the
intended send time, so queueing behind a busy worker shows up in the figures.
"""

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from websockets.asyncio.client import connect

from loadtests.bench.meter import ProcessMeter
from loadtests.bench.stack import BenchStack
from loadtests.bench.stats import percentile_ms

LEVELS = (1, 20, 100)
REQUESTS_PER_LEVEL = 200
OPEN_LOOP_RATES = (100, 200, 300)
OPEN_LOOP_SECONDS = 5


async def new_account(http: httpx.AsyncClient) -> dict[str, Any]:
    """A fresh learner's account (and token); raises with the API's answer if it is refused."""
    response = await http.post(
        "/api/auth/register", json={"username": f"b{uuid.uuid4().hex[:12]}", "password": "benchmark-password"}
    )
    if response.status_code != 201:
        raise RuntimeError(f"register answered {response.status_code}: {response.text[:300]}")
    return dict(response.json())


async def new_accounts(http: httpx.AsyncClient, count: int) -> list[dict[str, Any]]:
    """`count` accounts, a few at a time: a replica hashes only AUTH_HASH_CONCURRENCY passwords
    at once and answers 503 `busy` to sign-ups that wait longer than AUTH_HASH_WAIT_S."""
    gate = asyncio.Semaphore(4)

    async def one() -> dict[str, Any]:
        async with gate:
            return await new_account(http)

    return list(await asyncio.gather(*(one() for _ in range(count))))


async def _user(
    stack: BenchStack,
    http: httpx.AsyncClient,
    account: dict[str, Any],
    count: int,
    out: dict[str, list[float]],
    go: asyncio.Barrier,
) -> None:
    headers = {"Authorization": f"Bearer {account['access_token']}"}
    async with connect(f"{stack.ws_url}/ws/user/{account['participant_id']}") as ws:
        await ws.send(json.dumps({"type": "auth", "token": account["access_token"]}))
        await ws.recv()  # hello
        await go.wait()  # everyone is connected: no sign-up (argon2) or handshake runs while chats are timed
        for _ in range(count):
            started = time.perf_counter()
            response = await http.post("/ai/chat2", json={"message": "benchmark"}, headers=headers)
            out["submit"].append(time.perf_counter() - started)
            task_id = response.json()["task_id"]
            first = None
            while True:
                frame = json.loads(await ws.recv())
                if frame.get("task_id") != task_id:
                    continue
                if first is None:
                    first = time.perf_counter() - started
                    out["first"].append(first)
                if frame["type"] == "chat_result":
                    out["result"].append(time.perf_counter() - started)
                    break


async def _baseline_user(url: str, http: httpx.AsyncClient, count: int, out: list[float]) -> None:
    for _ in range(count):
        started = time.perf_counter()
        await http.post(f"{url}/enqueue")
        out.append(time.perf_counter() - started)


async def end_to_end(stack: BenchStack, baseline_url: str) -> list[dict[str, Any]]:
    rows = []
    limits = httpx.Limits(max_connections=200)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as http:
        for users in LEVELS:
            per_user = max(1, REQUESTS_PER_LEVEL // users)
            out: dict[str, list[float]] = {"submit": [], "first": [], "result": []}
            accounts = await new_accounts(http, users)
            go = asyncio.Barrier(users)
            await asyncio.gather(*(_user(stack, http, account, per_user, out, go) for account in accounts))
            base: list[float] = []
            await asyncio.gather(*(_baseline_user(baseline_url, http, per_user, base) for _ in range(users)))
            rows.append(
                {
                    "users": users,
                    "n": len(out["submit"]),
                    **{k: (percentile_ms(v, 50), percentile_ms(v, 99)) for k, v in out.items()},
                    "baseline": (percentile_ms(base, 50), percentile_ms(base, 99)),
                }
            )
    return rows


async def open_loop(stack: BenchStack) -> list[dict[str, Any]]:
    """Submit -> result at each rate in OPEN_LOOP_RATES, timed from the intended send time."""
    limits = httpx.Limits(max_connections=500)
    async with httpx.AsyncClient(base_url=stack.base_url, timeout=60, limits=limits) as http:
        return [await _open_loop_at(stack, http, rate) for rate in OPEN_LOOP_RATES]


async def _open_loop_at(stack: BenchStack, http: httpx.AsyncClient, rate: int) -> dict[str, Any]:
    learner = await new_account(http)
    headers = {"Authorization": f"Bearer {learner['access_token']}"}
    count = rate * OPEN_LOOP_SECONDS
    intended: dict[str, float] = {}
    results: dict[str, float] = {}
    errors = 0

    async def submit(at: float) -> None:
        nonlocal errors
        try:
            response = await http.post("/ai/chat2", json={"message": "benchmark"}, headers=headers)
        except httpx.HTTPError:  # an overloaded step counts its failures instead of ending the bench
            errors += 1
            return
        if response.status_code == 202:
            intended[response.json()["task_id"]] = at
        else:
            errors += 1

    # No client pings: past saturation its pong waits behind seconds of queued frames, and the
    # client would close the socket (1011) in the middle of the measurement.
    ws_url = f"{stack.ws_url}/ws/user/{learner['participant_id']}"
    async with connect(ws_url, max_queue=None, ping_interval=None) as ws:
        await ws.send(json.dumps({"type": "auth", "token": learner["access_token"]}))
        await ws.recv()  # hello

        async def read() -> None:
            while len(results) < count - errors:
                frame = json.loads(await ws.recv())
                if frame["type"] == "chat_result":
                    results[frame["task_id"]] = time.perf_counter()

        reader = asyncio.create_task(read())
        worker, api = ProcessMeter([p.pid for p in stack.workers]), ProcessMeter([p.pid for p in stack.apis])
        start = time.perf_counter() + 0.1
        sends = []
        for i in range(count):
            at = start + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sends.append(asyncio.create_task(submit(at)))
        await asyncio.gather(*sends)
        await asyncio.wait_for(reader, timeout=120)
        worker_cpu_s, api_cpu_s = worker.stop(), api.stop()
    latencies = [results[task_id] - at for task_id, at in intended.items()]
    return {
        "rate": rate,
        "tasks": len(latencies),
        "errors": errors,
        "completed_per_s": len(latencies) / (max(results.values()) - start),
        "p50": percentile_ms(latencies, 50),
        "p99": percentile_ms(latencies, 99),
        # CPU per chat of each process: its inverse is what one core of it could do.
        "worker_cpu_ms": 1000 * worker_cpu_s / max(1, len(latencies)),
        "api_cpu_ms": 1000 * api_cpu_s / max(1, len(latencies)),
    }
