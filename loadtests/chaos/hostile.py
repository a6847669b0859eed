"""Scenarios 10 and 11: a hostile learner beside honest ones (issue 25).

10. Floods. A grading worker joins the stack. Honest learners submit a correct page every
    VICTIM_INTERVAL_S; after a clean phase, a hostile learner submits pages that flood their
    browser (requests, sockets, frames, errors, blobs, postMessage, a spin), one after another.
    Checked: every honest grading is SUCCESS and passed (none `timeout`), their result times in
    the flood phase against the clean one, each flooding page ended (`timeout` or graded), and
    after the floods the worker's process tree holds no process of an ended lane and no process
    over its memory bound.
11. Never-reading sockets. One learner has a full history (~4.8 MB); it opens NEVER_READING
    sockets that each ask for all of it and read nothing, on one replica, while the others keep up
    steady chats. Checked: the replica's memory stays within a bound, /metrics counts the sockets
    (the per-user cap holds), every one is gone by the idle timeout plus a margin, and the honest
    learners miss nothing.
"""

import asyncio
import time
import uuid
from typing import Any

import httpx
import psutil
import redis

from app.exercises.repository import all_exercises
from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import EnvelopePublisher
from loadtests.bench.stats import percentile_ms
from loadtests.chaos.learner import connected_learners
from loadtests.chaos.ledger import Ledger
from loadtests.chaos.settle import settle_and_count
from loadtests.chaos.stack import ChaosStack
from tests.support.client import Account, StalledClient
from tests.support.grading import process_tree, rss_mb
from tests.support.stack import Worker

EXERCISE = "css-flex-row"
VICTIMS = 2
VICTIM_INTERVAL_S = 2.0
CLEAN_S = 12.0
FLOOD_S = 75.0
SANDBOX_TIMEOUT_S = 15  # the production default: an honest page has its normal time
# Pages that flood the browser they run in, network and not (issue 25, finding 1).
FLOODS = {
    "requests": "setInterval(() => { for (let i = 0; i < 2000; i++) fetch('/f' + Math.random()).catch(() => {}); }, 5);",
    "sockets": "setInterval(() => { for (let i = 0; i < 500; i++) { try { new WebSocket('ws://127.0.0.1:9/' + i); } "
    "catch (e) {} } }, 5);",
    "frames": "setInterval(() => { for (let i = 0; i < 200; i++) { const f = document.createElement('iframe'); "
    "document.body.append(f); f.remove(); } }, 1);",
    "errors": "setInterval(() => { for (let i = 0; i < 1000; i++) setTimeout(() => { throw new Error('x'); }, 0); }, 1);",
    "blobs": "const kept = []; setInterval(() => { kept.push(new Blob([new Uint8Array(50e6)])); }, 5);",
    "messages": "onmessage = () => { for (let i = 0; i < 100; i++) postMessage('again', '*'); }; postMessage('go', '*');",
    "spin": "while (true) {}",
}
PROCESS_BOUND_MB = 1100  # SANDBOX_MEMORY_MB (1024) of private memory, and what it shares

NEVER_READING = 40
STEADY_LEARNERS = 2
STEADY_INTERVAL_S = 0.5
SOCKETS_CAP = 20
IDLE_TIMEOUT_S = 5
REPLICA_GROWTH_BOUND_MB = 60


async def _submit(http: httpx.AsyncClient, url: str, account: Account, code: dict[str, str]) -> tuple[int, str]:
    response = await http.post(
        f"{url}/submit-test2", json={"exercise_id": EXERCISE, "code": code}, headers=account.headers
    )
    return response.status_code, response.json().get("task_id", "") if response.status_code == 202 else ""


async def _final(http: httpx.AsyncClient, url: str, account: Account, task_id: str) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        status: dict[str, Any] = (await http.get(f"{url}/api/tasks/{task_id}", headers=account.headers)).json()
        if status["state"] in ("SUCCESS", "FAILURE", "CANCELLED"):
            return status
        await asyncio.sleep(0.2)
    return {"state": "unfinished", "error": None, "result": None}


async def run_grading_floods(stack: ChaosStack, http: httpx.AsyncClient, ledger: Ledger) -> dict[str, Any]:
    """Honest gradings beside flooding pages in one grading worker; the ledger's counts plus what floods did."""
    env = {**stack.env, "SANDBOX_TIMEOUT_S": str(SANDBOX_TIMEOUT_S), "SANDBOX_MAX_CONCURRENCY": "3"}
    grader = await asyncio.to_thread(Worker, "worker-grading", env, stack.log_dir, queues="submissions")
    url = stack.apis[0].base_url
    learners = await connected_learners(ledger, http, [url], [stack.apis[0].ws_url], VICTIMS + 1)
    victims = [Account(lr.participant_id, lr.token) for lr in learners[:VICTIMS]]
    mallory = Account(learners[-1].participant_id, learners[-1].token)
    answer = all_exercises()[EXERCISE].answer.model_dump()
    graded: list[tuple[str, float, dict[str, Any]]] = []  # (phase, seconds, status)
    flooded: list[tuple[str, dict[str, Any]]] = []
    start = time.monotonic()
    flood_from, end = start + CLEAN_S, start + CLEAN_S + FLOOD_S

    async def honest(account: Account, offset: float) -> None:
        planned = start + offset
        while planned < end:
            await asyncio.sleep(max(0.0, planned - time.monotonic()))
            sent = time.monotonic()
            status, task_id = await _submit(http, url, account, answer)
            if status == 202:
                ledger.accept(account.participant_id, task_id, time.monotonic())
                final = await _final(http, url, account, task_id)
                graded.append(("flood" if sent >= flood_from else "clean", time.monotonic() - sent, final))
            else:
                ledger.refuse(f"{status} submit")
            planned += VICTIM_INTERVAL_S

    async def hostile() -> None:
        await asyncio.sleep(max(0.0, flood_from - time.monotonic()))
        kinds = list(FLOODS)
        turn = 0
        while time.monotonic() < end - SANDBOX_TIMEOUT_S:
            kind = kinds[turn % len(kinds)]
            code = {"html": "<div></div>", "css": "", "js": FLOODS[kind]}
            status, task_id = await _submit(http, url, mallory, code)
            if status == 202:
                ledger.accept(mallory.participant_id, task_id, time.monotonic())
                flooded.append((kind, await _final(http, url, mallory, task_id)))
            turn += 1

    try:
        await asyncio.gather(*(honest(v, i * VICTIM_INTERVAL_S / VICTIMS) for i, v in enumerate(victims)), hostile())
        counts = await settle_and_count(http, url, stack.redis.url, ledger, learners)
        await asyncio.sleep(3.0)  # a few seconds for ended lanes to be gone
        tree = process_tree(grader.process.pid)
        counts["worker_tree_mb"] = rss_mb(tree)
        counts["largest_process_mb"] = max(rss_mb([p]) for p in tree)
        counts["worker_processes"] = len(tree)
        log = grader.log_text()
    finally:
        for learner in learners:
            await learner.close()
        await asyncio.to_thread(grader.stop)
    times = {phase: [s for p, s, _ in graded if p == phase] for phase in ("clean", "flood")}
    wrong = [status for _, _, status in graded if status["state"] != "SUCCESS" or not status["result"]["passed"]]
    counts |= {
        "honest_graded": len(graded),
        "honest_wrong": len(wrong),
        "clean_p50_s": percentile_ms(times["clean"], 50) / 1000,
        "clean_max_s": max(times["clean"], default=float("nan")),
        "flood_p50_s": percentile_ms(times["flood"], 50) / 1000,
        "flood_max_s": max(times["flood"], default=float("nan")),
        "floods": len(flooded),
        "floods_timed_out": sum(1 for _, s in flooded if (s.get("error") or {}).get("code") == "timeout"),
        "lanes_ended": log.count("ending a grading lane"),
        "recovery_s": float("nan"),  # no fault to recover from
    }
    failures = []
    if wrong:
        failures.append(f"honest gradings that did not pass: {[(s['state'], s['error']) for s in wrong[:3]]}")
    if not times["flood"] or not flooded:
        failures.append("no honest grading ran beside a flood")
    if counts["largest_process_mb"] > PROCESS_BOUND_MB:
        failures.append(f"a process of the worker's tree holds {counts['largest_process_mb']:.0f} MB")
    # The worker, its Celery processes, and at most three lanes (its pool) of a dozen or so each.
    if counts["worker_processes"] > 3 + 3 * 16:
        failures.append(f"{counts['worker_processes']} processes in the worker's tree after the floods")
    counts["failures"] = failures
    return counts


def _open_sockets(metrics_text: str) -> float:
    line = next(line for line in metrics_text.splitlines() if line.startswith("taskwire_ws_connections "))
    return float(line.split()[1])


async def run_never_reading_sockets(stack: ChaosStack, http: httpx.AsyncClient, ledger: Ledger) -> dict[str, Any]:
    """Sockets that ask for a whole history and read nothing, beside steady learners; counts plus memory."""
    http_urls, ws_urls = [api.base_url for api in stack.apis], [api.ws_url for api in stack.apis]
    learners = await connected_learners(ledger, http, http_urls, ws_urls, STEADY_LEARNERS)
    # The hoarder is no learner of the ledger's: its history is filled from outside, not by tasks.
    body = {"username": f"hoarder{uuid.uuid4().hex[:10]}", "password": "chaos-password-1"}
    registered = (await http.post(f"{http_urls[0]}/api/auth/register", json=body)).json()
    hoarder = Account(registered["participant_id"], registered["access_token"])
    client = redis.Redis.from_url(stack.redis.url, decode_responses=True)
    publisher = EnvelopePublisher(client, history_maxlen=1000, history_ttl_s=3600)
    for _ in range(1000):
        publisher.publish(hoarder.participant_id, EnvelopeType.CHAT_DELTA, "hoard", {"delta": "y" * 4800})
    client.close()
    replica = stack.apis[0]
    before = rss_mb([psutil.Process(replica.process.pid)])
    stalled: list[StalledClient] = []
    start = time.monotonic()
    load = [asyncio.create_task(lr.submit_every(http, STEADY_INTERVAL_S, start + 25)) for lr in learners]
    try:
        for _ in range(NEVER_READING):
            socket = await asyncio.to_thread(StalledClient, replica.ws_url, hoarder, receive_buffer=4096)
            socket.send({"type": "resume", "last_id": "0-0"})
            stalled.append(socket)
        await asyncio.sleep(3.0)
        grown = rss_mb([psutil.Process(replica.process.pid)]) - before
        counted = _open_sockets((await http.get(f"{replica.base_url}/metrics")).text)
        await asyncio.sleep(max(0.0, start + 25 - time.monotonic()))  # well past the idle timeout
        remaining = _open_sockets((await http.get(f"{replica.base_url}/metrics")).text)
        await asyncio.gather(*load)
        counts = await settle_and_count(http, http_urls[-1], stack.redis.url, ledger, learners)
    finally:
        for socket in stalled:
            socket.close()
        for learner in learners:
            await learner.close()
    counts |= {
        "replica_grown_mb": grown,
        "sockets_counted": counted,
        "sockets_left": remaining,
        "recovery_s": float("nan"),  # no fault to recover from
    }
    failures = []
    if grown > REPLICA_GROWTH_BOUND_MB:
        failures.append(f"the replica grew {grown:.0f} MB for {NEVER_READING} sockets that read nothing")
    # The steady learners' sockets on this replica count too.
    if counted > SOCKETS_CAP + STEADY_LEARNERS:
        failures.append(f"/metrics counted {counted:.0f} sockets; the hoarder's cap is {SOCKETS_CAP}")
    if remaining > STEADY_LEARNERS:
        failures.append(f"{remaining:.0f} sockets were still open past the idle timeout")
    counts["failures"] = failures
    return counts
