"""Scenarios 1-7: steady load through a stack, one fault injected under it, then settle."""

import asyncio
import time
from typing import Any

import httpx

from loadtests.chaos.learner import connected_learners
from loadtests.chaos.ledger import Ledger
from loadtests.chaos.scenarios import Scenario
from loadtests.chaos.settle import settle_and_count
from loadtests.chaos.stack import ChaosStack

LEARNERS = 3
SUBMIT_INTERVAL_S = 0.4  # per learner: 7.5 chats/s in all
FAULT_AT_S = 4.0
LOAD_S = 12.0


async def run_with_fault(
    scenario: Scenario, stack: ChaosStack, http: httpx.AsyncClient, ledger: Ledger
) -> dict[str, Any]:
    """Steady load, one fault FAULT_AT_S in, load until LOAD_S, then settle."""
    http_urls = [api.base_url for api in stack.apis]
    ws_urls = [api.ws_url for api in stack.apis]
    learners = await connected_learners(
        ledger, http, http_urls, ws_urls, LEARNERS, sockets_per_replica=scenario.sockets_per_replica
    )
    assert scenario.inject is not None
    try:
        start = time.monotonic()
        load = [asyncio.create_task(lr.submit_every(http, SUBMIT_INTERVAL_S, start + LOAD_S)) for lr in learners]
        await asyncio.sleep(FAULT_AT_S)
        fault_at = time.monotonic()
        await scenario.inject(stack, learners)
        await asyncio.gather(*load)
        counts = await settle_and_count(http, http_urls[-1], stack.redis.url, ledger, learners)
        for stalled in stack.stalled:  # scenario 7: what became of the socket that stopped reading
            code = await asyncio.to_thread(stalled.read_until_closed, quiet_s=2)
            counts["stalled"] = f"closed {code}" if code else "open"
            counts["stalled_kib"] = stalled.bytes_read / 1024
    finally:
        for learner in learners:
            await learner.close()
    after = [at for task, at in ledger.first_terminal_at.items() if ledger.accepted_at.get(task, 0) >= fault_at]
    counts["recovery_s"] = min(after) - fault_at if after else float("nan")
    return counts
