"""A hostile learner against the running system: one test per hole of the security review (issue 15).

Real processes throughout: API replicas under uvicorn, a worker with its Chromium, Redis, the
database. Each test names the hole it closes; docs/security.md maps them to the defences.
"""

import asyncio
import contextlib
import json
import time
import unicodedata
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.core.embedded_redis import EmbeddedRedis
from app.exercises.repository import all_exercises
from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import EnvelopePublisher
from tests.conftest import with_own_database
from tests.support.client import Account, StalledClient, finished_tasks, open_socket, register
from tests.support.databases import database
from tests.support.grading import process_tree, rss_mb
from tests.support.stack import ApiServer, Worker, make_operator, migrate

FULL_WIDTH = {code: code + 0xFEE0 for code in range(0x21, 0x7F)}  # 'A' → 'Ａ'
ENDLESS_ALERTS = {"html": "<h1>Hello</h1>", "css": "", "js": "while (true) alert('mine now');"}


@contextlib.asynccontextmanager
async def own_api(name: str, env: dict[str, str], log_dir: Path) -> AsyncIterator[tuple[ApiServer, httpx.AsyncClient]]:
    """An API replica with these settings, and a client of it, for the block."""
    server = ApiServer(name, env, log_dir)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=30) as http:
            yield server, http
    finally:
        server.stop()


@pytest.fixture(scope="module")
def grading_stack(
    stack_env: dict[str, str], log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[dict[str, str], ApiServer, Worker]]:
    folder = tmp_path_factory.mktemp("hostile-grading")
    redis_server = EmbeddedRedis(folder / "redis").start()
    env = {
        **with_own_database(stack_env, folder),
        "REDIS_URL": redis_server.url,
        "SANDBOX_MAX_CONCURRENCY": "5",
        "SANDBOX_TIMEOUT_S": "4",
        "SANDBOX_QUEUE_TIMEOUT_S": "40",
    }
    api = ApiServer("api-hostile-grading", env, log_dir)
    worker = Worker("worker-hostile-grading", env, log_dir, queues="submissions")
    yield env, api, worker
    worker.stop()
    api.stop()
    redis_server.stop()


@pytest.fixture
async def grading_http(grading_stack: tuple[dict[str, str], ApiServer, Worker]) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=grading_stack[1].base_url, timeout=10) as client:
        yield client


async def _graded(http: httpx.AsyncClient, account: Account, code: dict[str, str]) -> tuple[dict[str, object], float]:
    """Submit the flex exercise; its final status and the seconds from submit to grade."""
    started = time.monotonic()
    response = await http.post(
        "/submit-test2", json={"exercise_id": "css-flex-row", "code": code}, headers=account.headers
    )
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    status = (await finished_tasks(http, account, [task_id], timeout_s=60))[task_id]
    return status, time.monotonic() - started


async def test_hole_3_five_stuck_pages_neither_fail_nor_slow_another_learners_grading(
    grading_stack: tuple[dict[str, str], ApiServer, Worker], grading_http: httpx.AsyncClient
) -> None:
    _, _, worker = grading_stack
    alice, mallory = await register(grading_http), await register(grading_http)
    answer = all_exercises()["css-flex-row"].answer.model_dump()
    normal, normal_s = await _graded(grading_http, alice, answer)
    assert normal["state"] == "SUCCESS" and normal["result"]["passed"]

    hostile = [
        await grading_http.post(
            "/submit-test2", json={"exercise_id": "css-flex-row", "code": ENDLESS_ALERTS}, headers=mallory.headers
        )
        for _ in range(5)
    ]
    assert [r.status_code for r in hostile] == [202] * 5, [r.text for r in hostile]
    # A sixth is refused at the door: the learner's gradings in flight are capped.
    sixth = await grading_http.post(
        "/submit-test2", json={"exercise_id": "css-flex-row", "code": ENDLESS_ALERTS}, headers=mallory.headers
    )
    assert sixth.status_code == 429 and sixth.json()["error"]["code"] == "too_many_in_flight", sixth.text
    await asyncio.sleep(1.0)  # mallory's first page is in the browser, looping

    graded, took_s = await _graded(grading_http, alice, answer)
    assert graded["state"] == "SUCCESS" and graded["result"]["passed"], graded
    assert took_s < max(2 * normal_s, normal_s + 1.5), f"{took_s:.2f} s against {normal_s:.2f} s alone"

    statuses = await finished_tasks(grading_http, mallory, [r.json()["task_id"] for r in hostile], timeout_s=60)
    errors = [status["error"] for status in statuses.values()]
    assert all(error is not None and error["code"] == "timeout" for error in errors), errors
    ended = worker.log_text().count("ending a grading lane: its page ran past the time limit")
    assert ended == 5, "each of mallory's pages ended its own lane, and no other lane was ended"


FLOODING_PAGES = {
    "requests": "setInterval(() => { for (let i = 0; i < 2000; i++) fetch('/f' + Math.random()).catch(() => {}); }, 5);",
    "messages": "onmessage = () => { for (let i = 0; i < 100; i++) postMessage('again', '*'); }; postMessage('go', '*');",
}


@pytest.mark.parametrize("flood", sorted(FLOODING_PAGES))
async def test_hole_1_a_flooding_page_fails_no_other_grading_and_leaves_nothing_behind(
    grading_stack: tuple[dict[str, str], ApiServer, Worker], grading_http: httpx.AsyncClient, flood: str
) -> None:
    # Issue 25: such a page made another learner's correct page end FAILURE timeout (18-77 s),
    # kept running after its own grading, and grew the worker's process tree to 9 GB.
    _, _, worker = grading_stack
    alice, mallory = await register(grading_http), await register(grading_http)
    answer = all_exercises()["css-flex-row"].answer.model_dump()
    normal, _ = await _graded(grading_http, alice, answer)
    assert normal["state"] == "SUCCESS" and normal["result"]["passed"]
    log_lines = len(worker.log_text().splitlines())

    code = {"html": "<div></div>", "css": "", "js": FLOODING_PAGES[flood]}
    hostile = await grading_http.post(
        "/submit-test2", json={"exercise_id": "css-flex-row", "code": code}, headers=mallory.headers
    )
    assert hostile.status_code == 202, hostile.text
    await asyncio.sleep(1.0)  # mallory's page is in a browser, flooding it
    graded, _ = await _graded(grading_http, alice, answer)
    assert graded["state"] == "SUCCESS" and graded["result"]["passed"], graded

    hostile_id = hostile.json()["task_id"]
    await finished_tasks(grading_http, mallory, [hostile_id], timeout_s=60)
    # Within a few seconds nothing of the page is left: no process of the tree holds more than
    # its bound, and the whole tree is the size of a worker with idle lanes.
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        tree = process_tree(worker.process.pid)
        if rss_mb(tree) < 2500:
            break
        await asyncio.sleep(0.2)
    assert rss_mb(tree) < 2500, f"the worker's tree holds {rss_mb(tree):.0f} MB after the flood"
    biggest = max(rss_mb([p]) for p in tree)
    assert biggest < 1024, f"one process of the worker's tree holds {biggest:.0f} MB"
    new_lines = worker.log_text().splitlines()[log_lines:]
    assert len(new_lines) < 100, f"the flood wrote {len(new_lines)} lines to the worker's log"
    assert not [line for line in new_lines if '"level": "ERROR"' in line], new_lines[-5:]


def _nested(depth: int) -> object:
    value: object = "deep"
    for _ in range(depth):
        value = {"next": value}
    return value


SECRET_WORDS = "my-private-words-31337"
# (method, path, body or None): each must be a 422 with a code, never a 500.
BAD_INPUTS = [
    ("GET", "/api/chat/history?before=9223372036854775808", None),
    ("GET", "/api/chat/history?before=99999999999999999999999", None),
    ("GET", "/api/tasks?kind=chat%00", None),
    ("POST", "/ai/chat2", {"message": "hi", "test_results": _nested(300)}),
    (
        "POST",
        "/ai/chat2",
        {"message": "hi", "test_results": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
    ),
    ("POST", "/ai/chat2", {"message": f"{SECRET_WORDS}\x00"}),
    ("POST", "/ai/chat2", {"message": "hi", "code_context": {"html": "<p>\x00</p>"}}),
    ("POST", "/ai/chat2", {"message": "hi", "test_results": {"k\x00": 1}}),
    ("POST", "/submit-test2", {"exercise_id": "css-flex-row", "code": {"js": "alert(1)\x00"}}),
    ("POST", "/submit-test2", {"exercise_id": "css-flex\x00", "code": {}}),
    ("POST", "/api/auth/login", {"username": f"{SECRET_WORDS}\x00", "password": "whatever-it-is"}),
    ("POST", "/api/auth/register", {"username": "nul\x00user", "password": "a long enough pass"}),
]


@pytest.mark.parametrize("database_kind", ["sqlite", "postgresql"])
async def test_hole_4_bad_inputs_get_422_with_a_code_and_leak_nothing(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, log_dir: Path, tmp_path: Path, database_kind: str
) -> None:
    with database(database_kind, tmp_path) as url:
        # Redis database 11 is this test's alone: rate-limit counters are per database.
        env = {**stack_env, "DATABASE_URL": url, "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/11"}
        migrate(env)
        async with own_api(f"api-bad-input-{database_kind}", env, log_dir) as (api, http):
            account = await register(http)
            answers = []
            for method, path, body in BAD_INPUTS:
                response = await http.request(method, path, json=body, headers=account.headers)
                answers.append((path, response.status_code, response.json().get("error", {}).get("code")))
            wrong = [answer for answer in answers if answer[1:] != (422, "validation_error")]
            assert not wrong, wrong
            log = api.log_text()
            assert "Traceback" not in log and '"level": "ERROR"' not in log
            assert SECRET_WORDS not in log, "a learner's words reached the log"


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


async def test_hole_2_resumes_on_a_socket_that_never_reads_cost_one_replay_at_most(
    api: ApiServer, redis_server: EmbeddedRedis, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    publisher = EnvelopePublisher(client, history_maxlen=1000, history_ttl_s=3600)
    first = publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "y" * 4800})
    for _ in range(999):  # a full history of ~4.8 MB
        publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "y" * 4800})
    client.close()
    before = _rss_mb(api.process.pid)
    stalled = StalledClient(api.ws_url, account, receive_buffer=4096)
    try:
        for _ in range(60):
            stalled.send({"type": "resume", "last_id": first})
        await asyncio.sleep(3.0)
        grown = _rss_mb(api.process.pid) - before
        assert grown < 40, f"the replica grew {grown:.0f} MB for one socket (about 4.8 MB per replay queued)"
        assert (await http.get("/healthz")).status_code == 200
    finally:
        stalled.close()


def _open_sockets(metrics_text: str) -> float:
    line = next(line for line in metrics_text.splitlines() if line.startswith("taskwire_ws_connections "))
    return float(line.split()[1])


async def test_issue_25_forty_never_reading_sockets_hold_a_page_each_and_are_dropped(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, log_dir: Path
) -> None:
    # Issue 25: each such socket pinned a whole replay in the transport's buffer (~4.8 MB), past
    # the idle timeout, uncounted by the per-user cap and by /metrics.
    env = {**stack_env, "WS_IDLE_TIMEOUT_S": "4", "WS_MAX_SOCKETS_PER_USER": "20"}
    async with own_api("api-never-reading", env, log_dir) as (api, http):
        account = await register(http)
        client = redis.Redis.from_url(redis_server.url, decode_responses=True)
        publisher = EnvelopePublisher(client, history_maxlen=1000, history_ttl_s=3600)
        for _ in range(1000):  # a full history of ~4.8 MB
            publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "y" * 4800})
        client.close()
        before = _rss_mb(api.process.pid)
        stalled = [StalledClient(api.ws_url, account, receive_buffer=4096) for _ in range(40)]
        try:
            for socket in stalled:
                socket.send({"type": "resume", "last_id": "0-0"})
            await asyncio.sleep(3.0)
            grown = _rss_mb(api.process.pid) - before
            counted = _open_sockets((await http.get("/metrics")).text)
            assert grown < 40, f"the replica grew {grown:.0f} MB for 40 sockets that read nothing"
            assert counted == 20, f"/metrics counts {counted} sockets; the user's cap is 20"
            # Past the idle timeout their closes cannot be sent (nothing is read): each is aborted.
            deadline = time.monotonic() + 10
            while _open_sockets((await http.get("/metrics")).text) > 0 and time.monotonic() < deadline:
                await asyncio.sleep(0.2)
            assert _open_sockets((await http.get("/metrics")).text) == 0, "a socket outlived its idle timeout"
            assert "Traceback" not in api.log_text()
        finally:
            for socket in stalled:
                socket.close()


@pytest.mark.parametrize("last_id", ["1_0-0", "1" * 23, "\u0661\u0662-0", "18446744073709551616-0"])
async def test_issue_25_a_malformed_last_id_in_the_auth_frame_is_4400_not_a_traceback(
    api: ApiServer, http: httpx.AsyncClient, last_id: str
) -> None:
    account = await register(http)
    async with connect(f"{api.ws_url}/ws/user/{account.participant_id}") as ws:
        await ws.send(json.dumps({"type": "auth", "token": account.token, "last_id": last_id}))
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4400, closed.value
    assert "Traceback" not in api.log_text()


async def test_issue_25_a_new_user_resuming_from_zero_is_told_nothing_was_lost(
    api: ApiServer, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    ws, hello = await open_socket(api.ws_url, account, last_id="0-0")
    await ws.close()
    assert hello["data"]["recovered"] is True and hello["data"]["replayed"] == 0, hello


async def test_issue_25_metrics_answers_401_to_any_wrong_authorization(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    async with own_api("api-metrics-token", {**stack_env, "METRICS_TOKEN": "s3cret-scrape"}, log_dir) as (api, http):
        answers = [
            (await http.get("/metrics", headers={"Authorization": value.encode()})).status_code
            for value in ("Bearer caf\u00e9", "Bearer \u0441\u0435\u043a\u0440\u0435\u0442", "Bearer wrong", "")
        ]
        right = await http.get("/metrics", headers={"Authorization": "Bearer s3cret-scrape"})
        assert answers == [401] * 4 and right.status_code == 200, answers
        assert "Traceback" not in api.log_text()


async def test_hole_2_resumes_are_served_one_at_a_time_and_rate_limited(
    api: ApiServer, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    ws, hello = await open_socket(api.ws_url, account)
    async with ws:
        head = hello["data"]["head_id"] or "0-0"
        for _ in range(8):
            await ws.send(json.dumps({"type": "resume", "last_id": head}))
        frames = [json.loads(await asyncio.wait_for(ws.recv(), 5)) for _ in range(8)]
    served = [f for f in frames if f["type"] == "hello"]
    refused = [f["data"]["code"] for f in frames if f["type"] == "error"]
    assert 1 <= len(served) <= 3 and len(served) + len(refused) == 8, frames
    assert set(refused) <= {"rate_limited", "resume_in_progress"} and "rate_limited" in refused, refused


async def test_hole_6_a_binary_first_frame_is_refused_with_4401(api: ApiServer, http: httpx.AsyncClient) -> None:
    account = await register(http)
    async with connect(f"{api.ws_url}/ws/user/{account.participant_id}") as ws:
        await ws.send(b'{"type": "auth", "token": "' + account.token.encode() + b'"}')
        with pytest.raises(ConnectionClosed) as closed:
            await asyncio.wait_for(ws.recv(), 5)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 4401
    assert "Traceback" not in api.log_text()


async def test_hole_5_one_account_per_name_however_it_is_typed(http: httpx.AsyncClient) -> None:
    name = f"Ada_{uuid.uuid4().hex[:8]}"
    first = await http.post("/api/auth/register", json={"username": name, "password": "analytical engine"})
    assert first.status_code == 201, first.text
    for spelling in (name.lower(), name.upper(), unicodedata.normalize("NFKC", name).translate(FULL_WIDTH)):
        again = await http.post("/api/auth/register", json={"username": spelling, "password": "analytical engine"})
        assert again.status_code == 409 and again.json()["error"]["code"] == "username_taken", (spelling, again.text)
    login = await http.post("/api/auth/login", json={"username": name.upper(), "password": "analytical engine"})
    assert login.status_code == 200 and login.json()["participant_id"] == first.json()["participant_id"]
    lookalike = "\u0430dmin" + uuid.uuid4().hex[:6]  # a Cyrillic 'а', then Latin letters
    refused = [
        {"username": lookalike, "password": "analytical engine"},
        {"username": "\u0430\u0435\u043e\u0440", "password": "analytical engine"},  # all Cyrillic, all Latin-looking
        {"username": f"bob_{uuid.uuid4().hex[:8]}", "password": "Password"},
        {"username": f"bob_{uuid.uuid4().hex[:8]}", "password": "12345678"},
        {"username": "carol_the_coder", "password": "Carol_The_Coder"},
    ]
    for body in refused:
        response = await http.post("/api/auth/register", json=body)
        assert response.status_code == 422 and response.json()["error"]["code"] == "validation_error", (
            body,
            response.text,
        )


async def test_issue_25_an_operators_name_cannot_be_squatted(
    stack_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    # Issue 25, finding 5: whoever registered a name in ADMIN_USERNAMES first was an operator.
    env = with_own_database(stack_env, tmp_path)
    early = f"chief{uuid.uuid4().hex[:6]}"  # a squatter registers before the name is configured
    async with own_api("api-squat-early", env, log_dir) as (_, http):
        squatter = await register(http, username=early)
    chief = f"ops{uuid.uuid4().hex[:6]}"
    env = {**env, "ADMIN_USERNAMES": f"{early}, {chief.upper()}"}
    async with own_api("api-squat", env, log_dir) as (_, http):
        assert (await http.get("/api/ops/overview", headers=squatter.headers)).status_code == 403
        body = {"password": "a long enough pass"}
        disguises = [chief, chief.upper(), chief.translate(FULL_WIDTH), chief.replace("o", "\u03bf", 1)]
        answers = [
            (await http.post("/api/auth/register", json={**body, "username": name})).status_code for name in disguises
        ]
        assert answers == [409, 409, 409, 422], answers
        make_operator(env, chief, "the chief's own pass")
        signed_in = await http.post("/api/auth/login", json={"username": chief, "password": "the chief's own pass"})
        operator = Account(signed_in.json()["participant_id"], signed_in.json()["access_token"])
        assert (await http.get("/api/ops/overview", headers=operator.headers)).status_code == 200
        assert (await http.get("/api/ops/overview", headers=squatter.headers)).status_code == 403


async def test_hole_5_sign_in_is_limited_per_username_from_any_address(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    env = {**stack_env, "LOGIN_USER_RATE_LIMIT": "5/60", "FORWARDED_ALLOW_IPS": "127.0.0.1"}
    async with own_api("api-login-limit", env, log_dir) as (_, http):
        victim = f"v{uuid.uuid4().hex[:10]}"
        created = await http.post("/api/auth/register", json={"username": victim, "password": "victim's long pass"})
        assert created.status_code == 201, created.text
        codes = []
        for attempt in range(7):  # each guess from another address
            guess = await http.post(
                "/api/auth/login",
                json={"username": victim, "password": f"guess number {attempt}"},
                headers={"X-Forwarded-For": f"10.0.0.{attempt + 1}"},
            )
            codes.append(guess.status_code)
        assert codes == [401] * 5 + [429] * 2, codes


@pytest.mark.parametrize(("trusted", "believed"), [("127.0.0.1", True), ("10.9.9.9", False)])
async def test_hole_5_the_address_limit_counts_the_client_behind_a_trusted_proxy_only(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, log_dir: Path, trusted: str, believed: bool
) -> None:
    # The replica believes X-Forwarded-For only from FORWARDED_ALLOW_IPS: from the proxy each
    # learner is counted apart; from anyone else the header is the sender's claim and ignored.
    env = {**stack_env, "AUTH_RATE_LIMIT": "3/60", "FORWARDED_ALLOW_IPS": trusted}
    # Its own Redis database: unbelieved, every request counts as 127.0.0.1, as all other tests'.
    env["REDIS_URL"] = redis_server.url.rsplit("/", 1)[0] + "/12"
    async with own_api(f"api-forwarded-{believed}", env, log_dir) as (_, http):

        async def login_from(address: str) -> int:
            body = {"username": "nobody_here", "password": "not a password"}
            return (await http.post("/api/auth/login", json=body, headers={"X-Forwarded-For": address})).status_code

        # Addresses of this run's own: the counters outlive a run by a minute.
        one, other = f"203.0.113.{7 + believed}", f"198.51.100.{9 + believed}"
        first = [await login_from(one) for _ in range(4)]
        second = await login_from(other)
        assert first == [401, 401, 401, 429], first
        assert second == (401 if believed else 429), "another client behind the proxy has its own count"


async def test_hole_5_the_auth_limiter_fails_closed_when_redis_is_gone(
    stack_env: dict[str, str], log_dir: Path, tmp_path: Path
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis").start()
    try:
        async with own_api("api-limiter-down", {**stack_env, "REDIS_URL": own_redis.url}, log_dir) as (_, http):
            own_redis.stop()
            body = {"username": f"u{uuid.uuid4().hex[:10]}", "password": "a long enough pass"}
            response = await http.post("/api/auth/register", json=body)
            assert response.status_code == 503, response.text
            assert response.json()["error"]["code"] == "rate_limiter_unavailable"
    finally:
        own_redis.stop()


async def test_hole_5_a_burst_of_sign_ups_is_answered_quickly_not_queued_for_ever(
    stack_env: dict[str, str], log_dir: Path
) -> None:
    env = {**stack_env, "AUTH_HASH_CONCURRENCY": "2", "AUTH_HASH_WAIT_S": "1"}
    async with own_api("api-hash-burst", env, log_dir) as (_, http):

        async def sign_up() -> tuple[int, str, float]:
            started = time.monotonic()
            body = {"username": f"u{uuid.uuid4().hex[:10]}", "password": "a long enough pass"}
            response = await http.post("/api/auth/register", json=body)
            code = response.json().get("error", {}).get("code", "") if response.status_code != 201 else ""
            return response.status_code, code, time.monotonic() - started

        answers = await asyncio.gather(*(sign_up() for _ in range(60)))
        assert {(status, code) for status, code, _ in answers} <= {(201, ""), (503, "busy")}, answers
        assert any(status == 201 for status, _, _ in answers)
        slowest = max(took for _, _, took in answers)
        assert slowest < 4, f"a sign-up waited {slowest:.1f} s"
