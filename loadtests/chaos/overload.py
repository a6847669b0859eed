"""Scenario 8: twice the measured capacity for a minute; the API sheds, and the queue drains after.

A run first measures the stack's capacity: submits far past it for SATURATION_S keep the queue
full, and the results that arrive after the first third of that, per second, are the capacity.
Then learners offer twice that, on a fixed schedule, for OVERLOAD_S. The bottleneck is the workers,
not the API: each replica answers a submit in milliseconds, so the test is whether the queue
stays bounded (submits past QUEUE_MAX_BACKLOG answer 503 `overloaded`, nothing written) and
whether every accepted task still finishes and is delivered once the load stops.
"""

import asyncio
import time
from typing import Any

import httpx
import redis.asyncio as aioredis

from loadtests.bench.stats import percentile_ms
from loadtests.chaos.learner import Learner, connected_learners
from loadtests.chaos.ledger import Ledger
from loadtests.chaos.settle import settle_and_count
from loadtests.chaos.stack import ChaosStack

LEARNERS = 6
MAX_BACKLOG = 40  # QUEUE_MAX_BACKLOG for the run: about 5 s of the stack's capacity
SATURATION_PER_S = 30.0  # well past what 8 worker slots finish, so the queue stays full
SATURATION_S = 12.0
OVERLOAD_FACTOR = 2.0
OVERLOAD_S = 60.0


async def _offer(http: httpx.AsyncClient, learners: list[Learner], per_s: float, seconds: float) -> float:
    """Submit `per_s` chats a second, spread over the learners, for `seconds`; returns when it began."""
    start = time.monotonic()
    interval = len(learners) / per_s
    await asyncio.gather(
        *(
            learner.submit_every(http, interval, start + seconds, first_at=start + i * interval / len(learners))
            for i, learner in enumerate(learners)
        )
    )
    return start


async def _measure_capacity(http: httpx.AsyncClient, ledger: Ledger, learners: list[Learner]) -> float:
    """Completions per second while the queue is kept full, past the first third of a saturation phase."""
    start = await _offer(http, learners, SATURATION_PER_S, SATURATION_S)
    measured_from, measured_to = start + SATURATION_S / 3, start + SATURATION_S
    done = sum(1 for at in ledger.first_terminal_at.values() if measured_from <= at <= measured_to)
    return done / (measured_to - measured_from)


async def _watch_backlog(redis_url: str, samples: list[int], stop: asyncio.Event) -> None:
    client = aioredis.Redis.from_url(redis_url)
    try:
        while not stop.is_set():
            samples.append(int(await client.llen("chat")))
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def run_overload(stack: ChaosStack, http: httpx.AsyncClient, ledger: Ledger) -> dict[str, Any]:
    """Calibrate, overload, settle; the ledger's counts plus what shedding did."""
    http_urls = [api.base_url for api in stack.apis]
    learners = await connected_learners(ledger, http, http_urls, [api.ws_url for api in stack.apis], LEARNERS)
    backlog: list[int] = []
    stop_watching = asyncio.Event()
    watcher: asyncio.Task[None] | None = None
    try:
        capacity = await _measure_capacity(http, ledger, learners)
        shed_before = ledger.refused["503 overloaded"]
        watcher = asyncio.create_task(_watch_backlog(stack.redis.url, backlog, stop_watching))
        start = await _offer(http, learners, OVERLOAD_FACTOR * capacity, OVERLOAD_S)
        overload_end = time.monotonic()
        counts = await settle_and_count(http, http_urls[-1], stack.redis.url, ledger, learners)
    finally:
        stop_watching.set()
        if watcher is not None:
            await watcher
        for learner in learners:
            await learner.close()
    during = [t for t, at in ledger.accepted_at.items() if at >= start]
    waits = [ledger.first_terminal_at[t] - ledger.accepted_at[t] for t in during if t in ledger.first_terminal_at]
    finished_last = max((ledger.first_terminal_at.get(t, overload_end) for t in during), default=overload_end)
    shed = ledger.refused["503 overloaded"] - shed_before
    other_refusals = {reason: n for reason, n in ledger.refused.items() if reason != "503 overloaded"}
    counts |= {
        "capacity_per_s": capacity,
        "offered_per_s": (len(during) + shed + sum(other_refusals.values())) / OVERLOAD_S,
        "accepted_in_overload": len(during),
        "served_per_s": sum(1 for at in ledger.first_terminal_at.values() if start <= at <= overload_end) / OVERLOAD_S,
        "shed": shed,
        "max_backlog": max(backlog, default=0),
        "final_backlog": backlog[-1] if backlog else 0,
        "result_p50_s": percentile_ms(waits, 50) / 1000,
        "result_p99_s": percentile_ms(waits, 99) / 1000,
        "recovery_s": finished_last - overload_end,  # the queue drained
    }
    failures = []
    if shed == 0:
        failures.append("nothing was shed at twice the capacity")
    if other_refusals:
        failures.append(f"refusals other than 503 overloaded: {other_refusals}")
    if counts["final_backlog"] != 0:
        failures.append(f"the queue did not drain: {counts['final_backlog']} waiting")
    # Admission reads the queue before the enqueue: submits in flight on both replicas can pass together.
    if counts["max_backlog"] > MAX_BACKLOG + 2 * LEARNERS:
        failures.append(f"the backlog reached {counts['max_backlog']}, over QUEUE_MAX_BACKLOG={MAX_BACKLOG}")
    counts["failures"] = failures
    return counts
