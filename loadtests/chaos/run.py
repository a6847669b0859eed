"""`make chaos` / `make chaos-quick`: drive steady load through a real stack, break it, settle the ledger.

Each run: a fresh ChaosStack (2 API replicas, 2 workers, its own redis-server), learners with a
resuming socket on each replica submitting chats steadily, one fault injected FAULT_AT_S in,
load until LOAD_S, then settle: every accepted task terminal in the database, every socket
caught up. The pass bar (issue 10): lost = 0 and unnotified = 0 everywhere; duplicated
completions at most the faults injected, and 0 for a warm shutdown.
`--quick` runs scenarios 1-5 once and writes nothing; the full run repeats every scenario RUNS
times and writes docs/reliability.md. Exit status 1 when any run misses the bar.
"""

import asyncio
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from loadtests.bench.report import machine
from loadtests.chaos.learner import Learner
from loadtests.chaos.ledger import Ledger, is_terminal
from loadtests.chaos.scenarios import SCENARIOS, Scenario
from loadtests.chaos.stack import ChaosStack
from tests.support.inspect import history_of
from tests.support.waiting import wait_until

LEARNERS = 3
SUBMIT_INTERVAL_S = 0.4  # per learner: 7.5 chats/s in all
FAULT_AT_S = 4.0
LOAD_S = 12.0
SETTLE_TIMEOUT_S = 90.0
RUNS = 3
OUT = Path(__file__).resolve().parents[2] / "docs" / "reliability.md"
RAW = Path(__file__).resolve().parents[1] / "reports" / "chaos-results.json"  # per run, git-ignored


async def _statuses(http: httpx.AsyncClient, url: str, learners: list[Learner]) -> dict[str, dict[str, Any]]:
    out = {}
    for learner in learners:
        headers = {"Authorization": f"Bearer {learner.token}"}
        for task_id in learner.ledger.accepted[learner.participant_id]:
            out[task_id] = (await http.get(f"{url}/api/tasks/{task_id}", headers=headers)).json()
    return out


def _terminal_in_history(redis_url: str, learners: list[Learner]) -> dict[str, int]:
    """Terminal envelopes per task in the learners' histories (more than one: completed twice)."""
    envelopes = [e for learner in learners for e in history_of(redis_url, learner.participant_id)]
    return dict(Counter(e["task_id"] for e in envelopes if is_terminal(e)))


async def run_once(scenario: Scenario) -> dict[str, Any]:
    """One run of one scenario: its counts and recovery time."""
    stack = await asyncio.to_thread(
        ChaosStack, persistent_redis=scenario.persistent_redis, worker_pool=scenario.worker_pool
    )
    ledger = Ledger()
    http_urls = [api.base_url for api in stack.apis]
    learners = [Learner(ledger, http_urls, [api.ws_url for api in stack.apis]) for _ in range(LEARNERS)]
    try:
        async with httpx.AsyncClient(timeout=10) as http:
            for learner in learners:
                await learner.register(http)
                learner.start_sockets()
            await asyncio.to_thread(
                wait_until, lambda: all(lr.all_connected() for lr in learners), timeout_s=10, what="every socket open"
            )
            start = time.monotonic()
            load = [asyncio.create_task(lr.submit_every(http, SUBMIT_INTERVAL_S, start + LOAD_S)) for lr in learners]
            await asyncio.sleep(FAULT_AT_S)
            fault_at = time.monotonic()
            await scenario.inject(stack, learners)
            await asyncio.gather(*load)

            # Settle: the database first (the truth), then every socket (the fast path).
            deadline = time.monotonic() + SETTLE_TIMEOUT_S
            while True:
                statuses = await _statuses(http, http_urls[-1], learners)
                done = all(s.get("state") in ("SUCCESS", "FAILURE", "CANCELLED") for s in statuses.values())
                if done or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.5)
            for _ in range(40):
                if all(lr.all_connected() for lr in learners) and ledger.counts(statuses, {})["unnotified"] == 0:
                    break
                await asyncio.sleep(0.25)
            counts = ledger.counts(statuses, _terminal_in_history(stack.redis.url, learners))
            counts["worker_crashes"] = stack.unexpected_worker_exits
    finally:
        for learner in learners:
            await learner.close()
        await asyncio.to_thread(stack.close)
    after = [at for task, at in ledger.first_terminal_at.items() if ledger.accepted_at.get(task, 0) >= fault_at]
    counts["recovery_s"] = min(after) - fault_at if after else float("nan")
    return counts


def passes(scenario: Scenario, counts: dict[str, Any]) -> bool:
    """Issue 10's bar for one run (one fault injected per run)."""
    allowed_duplicates = 0 if scenario.warm else 1
    return (
        counts["lost"] == 0
        and counts["unnotified"] == 0
        and counts["unexpected"] == 0
        and counts["duplicated"] <= allowed_duplicates
    )


def table(results: dict[Scenario, list[dict[str, Any]]]) -> str:
    lines = [
        "| scenario | runs | accepted | completed | failed | lost | duplicated | unnotified | learned by resync | unexpected | other worker crashes | recovery s (median, max) | bar |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for scenario, runs in results.items():
        total = {
            k: sum(r[k] for r in runs)
            for k in (
                "accepted",
                "completed",
                "failed",
                "lost",
                "duplicated",
                "unnotified",
                "resynced",
                "unexpected",
                "worker_crashes",
            )
        }
        recoveries = [r["recovery_s"] for r in runs if r["recovery_s"] == r["recovery_s"]]
        recovery = f"{statistics.median(recoveries):.1f}, {max(recoveries):.1f}" if recoveries else "–"
        verdict = "pass" if all(passes(scenario, r) for r in runs) else "**FAIL**"
        lines.append(
            f"| {scenario.title} | {len(runs)} | {total['accepted']} | {total['completed']} | {total['failed']} | "
            f"{total['lost']} | {total['duplicated']} | {total['unnotified']} | {total['resynced']} | {total['unexpected']} | "
            f"{total['worker_crashes']} | {recovery} | {verdict} |"
        )
    return "\n".join(lines)


async def main(quick: bool) -> int:
    runs = 1 if quick else RUNS
    results: dict[Scenario, list[dict[str, Any]]] = {}
    for scenario in SCENARIOS:
        if quick and not scenario.quick:
            continue
        results[scenario] = []
        for i in range(runs):
            counts = await run_once(scenario)
            print(f"{scenario.key} run {i + 1}: {counts}", file=sys.stderr, flush=True)
            results[scenario].append(counts)
            RAW.parent.mkdir(exist_ok=True)
            RAW.write_text(json.dumps({s.key: runs for s, runs in results.items()}, indent=1))
    text = table(results)
    print(text)
    if not quick:
        OUT.write_text(report(text))
        print(f"written to {OUT}", file=sys.stderr)
    return 0 if all(passes(s, r) for s, runs in results.items() for r in runs) else 1


def report(text: str) -> str:
    """docs/reliability.md: how the runs were made, the table, and how to read it."""
    return "\n".join(
        [
            "# Reliability: faults under load, settled in a ledger",
            "",
            f"Measured with `make chaos` (`python -m loadtests.chaos.run`) on {machine()}.",
            "`make chaos-quick` runs scenarios 1–5 once each and is part of CI (`.ci/run`).",
            "",
            "Each run starts a fresh stack: 2 API replicas, 2 workers (threads pool with 4 slots; prefork",
            "for scenario 1) under a supervisor that restarts a worker that exits, as compose's",
            "`restart: unless-stopped` does in production, a private redis-server and SQLite.",
            f"{LEARNERS} learners each hold a socket on both replicas that reconnects and resumes from its",
            f"last id, as the web client does, and submit a chat every {SUBMIT_INTERVAL_S} s for {LOAD_S:.0f} s;",
            f"one fault is injected {FAULT_AT_S:.0f} s in. The run settles when every accepted task is",
            "terminal in the database and every socket has caught up, or after 90 s.",
            "",
            text,
            "",
            "## How to read it",
            "",
            "- **accepted**: submits answered `202`. Submits refused while Redis is down (`503",
            "  queue_unavailable`, nothing written) are not accepted and not counted.",
            "- **lost**: accepted, not terminal in the database when the run settles.",
            "- **duplicated**: a task with more than one terminal envelope (distinct ids) on a socket, or",
            "  more than one in the user's history: completed twice.",
            "- **unnotified**: terminal in the database, but a socket never received its terminal envelope",
            "  (live, or replayed after reconnecting with its last id) nor learned it from a resync.",
            "- **learned by resync**: terminal states a socket's client read over HTTP because a `hello`",
            "  said history could not cover what it missed (`recovered: false`), as the web client does.",
            "  Only a Redis restart without persistence causes it: the histories are gone with it, and",
            "  an envelope published just before the crash may never have reached the replicas.",
            "- **unexpected**: envelopes for tasks the user never submitted.",
            "- **other worker crashes**: workers that exited on their own during the run and were",
            "  restarted by the supervisor. Redis restarts cause them: Celery's Redis transport",
            "  (kombu 5.7) can crash the worker while closing its channel on a lost connection",
            "  (`AttributeError: 'NoneType' object has no attribute 'hostname'`, a known kombu bug class).",
            "  Nothing is lost because the task's lease expires and the reconciler hands it out again.",
            "- Scenario 7 adds one socket that never reads to the six live ones (not the 1 % the issue names:",
            "  a run has too few sockets for that); the live sockets must miss nothing meanwhile.",
            "- **recovery**: from the fault to the first result of a task accepted after it. Worker faults",
            "  recover in about one task's length (~1 s): the other worker keeps serving, and the dead",
            "  worker's tasks are handed out again once their lease (3 s here) expires. A Redis restart",
            "  adds its 3 s outage and the reconnects. An API restart moves sockets to the other replica",
            "  at once (close code 1012) and they resume from their last id.",
            "",
            "Pass bar (issue 10): lost = 0 and unnotified = 0 in every run; duplicated completions at most",
            "the one fault injected per run, and 0 for a warm shutdown.",
            "",
        ]
    )


if __name__ == "__main__":
    sys.exit(asyncio.run(main(quick="--quick" in sys.argv[1:])))
