"""Settling a chaos run: wait until the database and every socket have caught up, then count."""

import asyncio
import time
from collections import Counter
from typing import Any

import httpx

from loadtests.chaos.learner import Learner
from loadtests.chaos.ledger import Ledger, is_terminal
from tests.support.client import TERMINAL_STATES
from tests.support.inspect import history_of

SETTLE_TIMEOUT_S = 90.0


async def _read_unfinished(
    http: httpx.AsyncClient, url: str, learners: list[Learner], statuses: dict[str, dict[str, Any]]
) -> None:
    """Read into `statuses` every accepted task not yet known to be terminal (terminal states never change)."""
    for learner in learners:
        headers = {"Authorization": f"Bearer {learner.token}"}
        for task_id in learner.ledger.accepted[learner.participant_id]:
            if statuses.get(task_id, {}).get("state") not in TERMINAL_STATES:
                statuses[task_id] = (await http.get(f"{url}/api/tasks/{task_id}", headers=headers)).json()


def _terminal_in_history(redis_url: str, learners: list[Learner]) -> dict[str, int]:
    """Terminal envelopes per task in the learners' histories (more than one: completed twice)."""
    envelopes = [e for learner in learners for e in history_of(redis_url, learner.participant_id)]
    return dict(Counter(e["task_id"] for e in envelopes if is_terminal(e)))


async def settle_and_count(
    http: httpx.AsyncClient, url: str, redis_url: str, ledger: Ledger, learners: list[Learner]
) -> dict[str, Any]:
    """Wait for every accepted task to be terminal in the database (the truth), then for every
    socket to have heard of it (the fast path), or SETTLE_TIMEOUT_S; the ledger's counts."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    statuses: dict[str, dict[str, Any]] = {}
    while True:
        await _read_unfinished(http, url, learners, statuses)
        if not ledger.lost(statuses) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    for _ in range(40):
        if all(lr.all_connected() for lr in learners) and ledger.counts(statuses, {})["unnotified"] == 0:
            break
        await asyncio.sleep(0.25)
    counts = ledger.counts(statuses, _terminal_in_history(redis_url, learners))
    counts["lost_tasks"] = ledger.lost(statuses)  # for a run that lost tasks: which, and where they stopped
    return counts
