"""Duplicates: 100 long tasks while workers are killed and Redis redelivers early.

Two workers run 100 chats of about 2 s each. Redis's visibility timeout is 1 s, so every
running task is redelivered to another worker while it still runs, and every few seconds one
worker is killed whole (SIGKILL to its process group) and a new one started. Counted at the end:
tasks completed more than once (more than one terminal envelope in the user's history),
tasks lost (never terminal), tasks failed on purpose (killed TASK_MAX_ATTEMPTS times: a task
that keeps killing workers is stopped), and the redeliveries Taskwire recognised and dropped. The baseline is
what plain Celery would do with the same settings: run every redelivery to completion, so each
redelivery of a running task is one more completion.
"""

import asyncio
import os
import signal
import time
from collections import Counter
from typing import Any

import httpx
import redis

from loadtests.bench.latency import new_account
from loadtests.bench.stack import bench_stack
from tests.support.inspect import history_of

TASKS = 100
KILL_EVERY_S = 4.0


def _terminal_per_task(redis_url: str, participant_id: str) -> Counter[str]:
    """How many chat_result envelopes each task has in the user's history."""
    return Counter(e["task_id"] for e in history_of(redis_url, participant_id) if e["type"] == "chat_result")


async def run() -> dict[str, Any]:
    """Submit TASKS chats, kill a worker every KILL_EVERY_S until all are done, then count."""
    settings = {
        "LLM_OFFLINE_DELAY_MS": "25",  # about 2 s per answer
        "CELERY_VISIBILITY_TIMEOUT_S": "1",
        "CELERY_UNACKED_RESTORE_INTERVAL_S": "0.5",
        "CELERY_UNACKED_RESTORE_THROTTLE": "1",
        "TASK_LEASE_TTL_S": "3",
        "TASK_RECONCILE_INTERVAL_S": "1",
        "HISTORY_MAXLEN": "100000",
        "CHAT_CONCURRENCY": "8",
    }
    with bench_stack(workers=2, **settings) as stack:
        async with httpx.AsyncClient(base_url=stack.base_url, timeout=30) as http:
            account = await new_account(http)
            headers = {"Authorization": f"Bearer {account['access_token']}"}
            task_ids = []
            for i in range(TASKS):
                response = await http.post("/ai/chat2", json={"message": f"long task {i}"}, headers=headers)
                task_ids.append(response.json()["task_id"])
            started, kills, states = time.monotonic(), 0, {}
            while time.monotonic() - started < 600:
                await asyncio.sleep(KILL_EVERY_S)
                states = {t: (await http.get(f"/api/tasks/{t}", headers=headers)).json() for t in task_ids}
                if all(status["state"] in ("SUCCESS", "FAILURE", "CANCELLED") for status in states.values()):
                    break
                victim = stack.workers.pop(0)
                os.killpg(victim.pid, signal.SIGKILL)
                victim.wait()
                kills += 1
                stack.start_worker()
            took = time.monotonic() - started
        terminal = _terminal_per_task(stack.redis_url, account["participant_id"])
        client = redis.Redis.from_url(stack.redis_url, decode_responses=True)
        caught = client.hgetall("taskwire:metrics")
        client.close()
    redeliveries = sum(int(v) for k, v in caught.items() if k.startswith("duplicate_deliveries"))
    return {
        "tasks": TASKS,
        "kills": kills,
        "seconds": took,
        "succeeded": sum(1 for s in states.values() if s["state"] == "SUCCESS"),
        "failed": Counter(s["error"]["code"] for s in states.values() if s["state"] == "FAILURE"),
        "lost": sum(1 for s in states.values() if s["state"] not in ("SUCCESS", "FAILURE", "CANCELLED")),
        "completed_twice": sum(1 for t in task_ids if terminal[t] > 1),
        "never_notified": sum(1 for t in task_ids if terminal[t] == 0),
        "redeliveries_dropped": redeliveries,
    }
