"""Scenario 9: bad input mixed into good traffic.

Learners keep up good traffic (chat submits and status reads) through PHASES windows that
alternate clean and mixed. In the mixed ones a second process — so its CPU does not sit in the
good clients' event loop and inflate their timings — sends bad requests as fast as BAD_INTERVAL_S:
oversized bodies (declared and streamed), malformed JSON, wrong types, NUL characters, JSON
nested 300 deep, ids past 64 bits (the inputs issue 15 found giving a 500), tampered, expired and
`alg=none` JWTs (naming a learner), and WebSocket abuse (bad auth frames, oversized, non-JSON and
binary frames). Checked: each bad request gets its documented status and error code, nothing
is written or enqueued for any of them, no worker or replica dies, the learners miss nothing,
and the good requests' P99 in the mixed windows is within P99_BOUND of the clean ones.
"""

import asyncio
import itertools
import json
import multiprocessing
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from loadtests.bench.stats import percentile_ms
from loadtests.chaos.learner import connected_learners
from loadtests.chaos.ledger import Ledger
from loadtests.chaos.settle import settle_and_count
from loadtests.chaos.stack import SETTINGS, ChaosStack
from tests.support.inspect import all_task_ids
from tests.support.tokens import expired_token, tampered_token, unsigned_token

LEARNERS = 3
PHASE_S = 15.0
PHASES = ("clean", "mixed", "clean", "mixed")
SUBMIT_INTERVAL_S = 0.6  # per learner: 5 chats/s in all, under the workers' capacity
READ_INTERVAL_S = 0.1  # per learner: 30 status reads/s in all
BAD_INTERVAL_S = 0.05  # the bad client: 20 bad HTTP requests/s
WS_ABUSE_EVERY = 10  # and one WebSocket abuse every this many bad requests
P99_BOUND = 1.2
OVER_LIMIT = 1024 * 1024 + 4096  # MAX_BODY_BYTES is 1 MiB
SETTINGS_MAX_FRAME = 64 * 1024  # WS_MAX_FRAME_BYTES's default, which the chaos stack keeps


@dataclass(frozen=True)
class Plan:
    """What the bad client needs to know, picklable for the process it runs in."""

    http_urls: list[str]
    ws_urls: list[str]
    mallory_id: str  # an account of the bad client's own
    mallory_token: str
    victim_id: str  # a learner the forged tokens name
    jwt_secret: str
    windows: list[tuple[float, float]]  # monotonic (start, end) of the mixed phases


def _expect(response: httpx.Response, status: int, code: str) -> str:
    try:
        got = response.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        got = "not-an-error-body"
    return "ok" if (response.status_code, got) == (status, code) else f"got {response.status_code} {got}"


def _http_abuses(plan: Plan) -> list[tuple[str, Callable[[httpx.AsyncClient, str], Awaitable[str]]]]:
    """Each bad request with the check of its answer (`ok`, or what came instead)."""
    mallory = {"Authorization": f"Bearer {plan.mallory_token}"}
    as_json = {**mallory, "Content-Type": "application/json"}
    oversized = json.dumps({"message": "x" * OVER_LIMIT}).encode()
    forged = {
        "tampered": tampered_token(plan.mallory_token, plan.victim_id),
        "expired": expired_token(plan.victim_id, plan.jwt_secret),
        "alg=none": unsigned_token(plan.victim_id),
    }

    async def streamed() -> AsyncIterator[bytes]:
        for start in range(0, len(oversized), 65536):
            yield oversized[start : start + 65536]

    def post(path: str, status: int, code: str, **request: Any) -> Callable[[httpx.AsyncClient, str], Awaitable[str]]:
        async def send(http: httpx.AsyncClient, url: str) -> str:
            return _expect(await http.post(f"{url}{path}", **request), status, code)

        return send

    async def chunked(http: httpx.AsyncClient, url: str) -> str:
        return _expect(await http.post(f"{url}/ai/chat2", content=streamed(), headers=as_json), 413, "body_too_large")

    grading = {"exercise_id": 5, "code": "not an object"}
    deep: object = "deep"
    for _ in range(300):
        deep = {"next": deep}

    def get(path: str, status: int, code: str) -> Callable[[httpx.AsyncClient, str], Awaitable[str]]:
        async def send(http: httpx.AsyncClient, url: str) -> str:
            return _expect(await http.get(f"{url}{path}", headers=mallory), status, code)

        return send

    return [
        # The inputs that gave a 500 before issue 15: each is a 422 at the edge now.
        ("id past 64 bits", get("/api/chat/history?before=9223372036854775808", 422, "validation_error")),
        ("NUL in a message", post("/ai/chat2", 422, "validation_error", json={"message": "a\x00b"}, headers=mallory)),
        (
            "NUL in code",
            post(
                "/submit-test2",
                422,
                "validation_error",
                json={"exercise_id": "css-flex-row", "code": {"js": "\x00"}},
                headers=mallory,
            ),
        ),
        (
            "NUL in a username",
            post(
                "/api/auth/login",
                422,
                "validation_error",
                json={"username": "mal\x00lory", "password": "whatever it is"},
            ),
        ),
        (
            "nested 300 deep",
            post("/ai/chat2", 422, "validation_error", json={"message": "hi", "test_results": deep}, headers=mallory),
        ),
        ("oversized body", post("/ai/chat2", 413, "body_too_large", content=oversized, headers=as_json)),
        ("oversized body, streamed", chunked),
        ("malformed JSON", post("/ai/chat2", 422, "validation_error", content=b'{"message": ', headers=as_json)),
        ("wrong type", post("/ai/chat2", 422, "validation_error", json={"message": 42}, headers=mallory)),
        ("wrong types, grading", post("/submit-test2", 422, "validation_error", json=grading, headers=mallory)),
        ("no token", post("/ai/chat2", 401, "not_authenticated", json={"message": "hi"})),
        *(
            (f"{name} JWT", post("/ai/chat2", 401, "invalid_token", json={"message": "hi"}, headers=_bearer(token)))
            for name, token in forged.items()
        ),
    ]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _close_code(ws_url: str, *frames: str | bytes) -> int | None:
    """Send `frames` and read until the server closes; its close code (None: it did not close)."""
    async with connect(ws_url, open_timeout=5, close_timeout=2) as ws:
        for frame in frames:
            await ws.send(frame)
        try:
            async with asyncio.timeout(5):
                async for _ in ws:
                    pass
        except (ConnectionClosed, TimeoutError):
            pass
        return ws.close_code


async def _error_codes_then_open(ws_url: str, auth: str, *frames: str | bytes) -> list[str]:
    """Authenticate, send `frames`; the `error` codes answered while the socket stays open."""
    async with connect(ws_url, open_timeout=5) as ws:
        await ws.send(auth)
        codes: list[str] = []
        for frame in frames:
            await ws.send(frame)
        async with asyncio.timeout(5):
            while len(codes) < len(frames):
                reply = json.loads(await ws.recv())
                if reply["type"] == "error":
                    codes.append(reply["data"]["code"])
            await (await ws.ping())  # and the socket is still open
        return codes


def _ws_abuses(plan: Plan) -> list[tuple[str, Callable[[str], Awaitable[str]]]]:
    path = f"/ws/user/{plan.mallory_id}"
    victim_path = f"/ws/user/{plan.victim_id}"
    auth = json.dumps({"type": "auth", "token": plan.mallory_token})

    def closes_with(code: int, where: str, *frames: str | bytes) -> Callable[[str], Awaitable[str]]:
        async def abuse(ws_url: str) -> str:
            got = await _close_code(f"{ws_url}{where}", *frames)
            return "ok" if got == code else f"closed with {got}"

        return abuse

    async def junk_frames(ws_url: str) -> str:
        codes = await _error_codes_then_open(f"{ws_url}{path}", auth, "not json", b"\x00\x01", '{"type": "nope"}')
        return "ok" if codes == ["malformed_frame", "binary_frame", "unknown_frame_type"] else f"errors {codes}"

    forged = [tampered_token(plan.mallory_token, plan.victim_id), unsigned_token(plan.victim_id)]
    return [
        ("ws non-JSON auth frame", closes_with(4401, path, "hello?")),
        *(
            (f"ws forged token {i}", closes_with(4401, victim_path, json.dumps({"type": "auth", "token": token})))
            for i, token in enumerate(forged)
        ),
        ("ws oversized frame", closes_with(1009, path, auth, "x" * (SETTINGS_MAX_FRAME + 1))),
        ("ws non-JSON, binary and unknown frames", junk_frames),
    ]


async def _bad_traffic(plan: Plan) -> Counter[str]:
    """Bad requests during the plan's windows; `name: ok` or `name: what came instead`, counted."""
    outcomes: Counter[str] = Counter()
    http_abuses = itertools.cycle(_http_abuses(plan))
    ws_abuses = itertools.cycle(_ws_abuses(plan))
    urls = itertools.cycle(zip(plan.http_urls, plan.ws_urls, strict=True))
    async with httpx.AsyncClient(timeout=10) as http:
        for start, end in plan.windows:
            await asyncio.sleep(max(0.0, start - time.monotonic()))
            planned, pending = max(start, time.monotonic()), set()  # a late start sends no catch-up burst
            for turn in itertools.count():
                if planned >= end:
                    break
                http_url, ws_url = next(urls)
                name, send = next(http_abuses)
                pending.add(asyncio.create_task(_record(outcomes, name, send(http, http_url))))
                if turn % WS_ABUSE_EVERY == 0:
                    ws_name, abuse = next(ws_abuses)
                    pending.add(asyncio.create_task(_record(outcomes, ws_name, abuse(ws_url))))
                planned += BAD_INTERVAL_S
                await asyncio.sleep(max(0.0, planned - time.monotonic()))
                pending = {task for task in pending if not task.done()}
            await asyncio.gather(*pending)
    return outcomes


async def _record(outcomes: Counter[str], name: str, check: Awaitable[str]) -> None:
    try:
        outcomes[f"{name}: {await check}"] += 1
    except Exception as exc:  # a dropped connection or a hang is an outcome too
        outcomes[f"{name}: {type(exc).__name__}"] += 1


def _bad_traffic_process(plan: Plan, out: "multiprocessing.Queue[Counter[str]]") -> None:
    out.put(asyncio.run(_bad_traffic(plan)))


async def run_bad_input(stack: ChaosStack, http: httpx.AsyncClient, ledger: Ledger) -> dict[str, Any]:
    """Alternate clean and mixed windows of good traffic; check the bad requests' answers and the good P99."""
    http_urls, ws_urls = [api.base_url for api in stack.apis], [api.ws_url for api in stack.apis]
    learners = await connected_learners(ledger, http, http_urls, ws_urls, LEARNERS)
    mallory = (await http.post(f"{http_urls[0]}/api/auth/register", json=_new_account())).json()
    begin = time.monotonic() + 2.0  # the bad client's process needs a moment to start
    windows = [(begin + i * PHASE_S, begin + (i + 1) * PHASE_S) for i in range(len(PHASES))]
    mixed = [window for window, phase in zip(windows, PHASES, strict=True) if phase == "mixed"]
    plan = Plan(
        http_urls, ws_urls, mallory["participant_id"], mallory["access_token"], learners[0].participant_id,
        SETTINGS["JWT_SECRET"], mixed,
    )  # fmt: skip
    context = multiprocessing.get_context("spawn")
    results: multiprocessing.Queue[Counter[str]] = context.Queue()
    bad_client = context.Process(target=_bad_traffic_process, args=(plan, results), name="chaos-bad-client")
    bad_client.start()
    try:
        end = windows[-1][1]
        good = [lr.submit_every(http, SUBMIT_INTERVAL_S, end, first_at=begin) for lr in learners]
        good += [lr.read_every(http, READ_INTERVAL_S, end) for lr in learners]
        await asyncio.gather(*good)
        outcomes: Counter[str] = await asyncio.to_thread(results.get, timeout=60)
        counts = await settle_and_count(http, http_urls[-1], stack.redis.url, ledger, learners)
    finally:
        bad_client.join(timeout=10)
        if bad_client.is_alive():
            bad_client.kill()
        for learner in learners:
            await learner.close()

    def in_mixed(sent: float) -> bool:
        return any(start <= sent < end for start, end in mixed)

    good_latencies = [(sent, seconds) for _, sent, seconds in ledger.latencies if sent >= begin]
    clean_p99_ms = percentile_ms([s for sent, s in good_latencies if not in_mixed(sent)], 99)
    mixed_p99_ms = percentile_ms([s for sent, s in good_latencies if in_mixed(sent)], 99)
    wrong = {name: n for name, n in outcomes.items() if not name.endswith(": ok")}
    accepted = set(ledger.accepted_at)
    written = all_task_ids(stack.database_url)
    counts |= {
        "bad_requests": sum(outcomes.values()),
        "wrong_answers": sum(wrong.values()),
        "good_requests": len(good_latencies),
        "good_refused": sum(ledger.refused.values()),
        "clean_p99_ms": clean_p99_ms,
        "mixed_p99_ms": mixed_p99_ms,
        "p99_ratio": mixed_p99_ms / clean_p99_ms,
        "tasks_not_accepted": len(written - accepted),
        "recovery_s": float("nan"),  # nothing to recover from
    }
    failures = []
    if wrong:
        failures.append(f"bad requests answered otherwise than documented: {wrong}")
    if written != accepted:
        failures.append(f"{len(written - accepted)} tasks written for rejected requests")
    if ledger.refused:
        failures.append(f"good requests refused: {dict(ledger.refused)}")
    if counts["p99_ratio"] > P99_BOUND:
        failures.append(f"good-request P99 {mixed_p99_ms:.1f} ms mixed vs {clean_p99_ms:.1f} ms clean")
    if stack.unexpected_worker_exits or any(api.process.poll() is not None for api in stack.apis):
        failures.append("a worker or an API replica died")
    counts["failures"] = failures
    return counts


def _new_account() -> dict[str, str]:
    return {"username": f"mallory{time.monotonic_ns()}", "password": "mallory-password-1"}
