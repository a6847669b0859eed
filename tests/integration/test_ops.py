"""The ops overview (issue 17): operators see live figures that move as tasks run; no one else does."""

import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import Account, finished_tasks, open_socket, register
from tests.support.stack import ApiServer, Worker, make_operator
from tests.support.waiting import frames_until

METRICS_TOKEN = "ops-test-metrics-token"


OPERATOR_PASSWORD = "correct horse battery"


class OpsStack:
    def __init__(self, api: ApiServer, env: dict[str, str], admin_name: str):
        self.api, self.env, self.admin_name = api, env, admin_name


@pytest.fixture(scope="module")
def ops_stack(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory, log_dir: Path
) -> Iterator[OpsStack]:
    admin_name = f"chief{uuid.uuid4().hex[:8]}"
    env = {
        **with_own_database(stack_env, tmp_path_factory.mktemp("ops-db")),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/15",
        # Upper case here, lower case at registration: both are one canonical name.
        "ADMIN_USERNAMES": f"someone-else, {admin_name.upper()}",
        "OPS_PUSH_INTERVAL_S": "0.3",
        "METRICS_TOKEN": METRICS_TOKEN,
        # A tutor answer of a few seconds, so that it is seen running and can be cancelled.
        "LLM_OFFLINE_DELAY_MS": "150",
    }
    api = ApiServer("api-ops", env, log_dir)
    make_operator(env, admin_name, OPERATOR_PASSWORD)
    # The chat worker can answer; the grading worker has no browser, as on a host without Chromium.
    chat = Worker("worker-ops-chat", env, log_dir, queues="chat")
    grader = Worker(
        "worker-ops-grader", {**env, "CHROMIUM_PATH": "/nonexistent/chromium"}, log_dir, queues="submissions"
    )
    yield OpsStack(api, env, admin_name)
    for process in (grader, chat, api):
        process.stop()


@pytest.fixture
async def http(ops_stack: OpsStack) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=ops_stack.api.base_url, timeout=10) as client:
        yield client


async def _admin(http: httpx.AsyncClient, name: str) -> Account:
    response = await http.post("/api/auth/login", json={"username": name, "password": OPERATOR_PASSWORD})
    assert response.status_code == 200, response.text
    body = response.json()
    return Account(body["participant_id"], body["access_token"])


async def _overview(http: httpx.AsyncClient, account: Account) -> dict[str, Any]:
    response = await http.get("/api/ops/overview", headers=account.headers)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _pushed(ws: ClientConnection, holds: Any, what: str) -> dict[str, Any]:
    frames = await frames_until(ws, lambda f: f["type"] == "ops_overview" and holds(f["data"]), what=what, timeout_s=30)
    data: dict[str, Any] = frames[-1]["data"]
    return data


async def test_only_operators_see_the_overview_and_cancel(ops_stack: OpsStack, http: httpx.AsyncClient) -> None:
    learner = await register(http)
    assert (await http.get("/api/ops/overview")).status_code == 401
    denied = await http.get("/api/ops/overview", headers=learner.headers)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "forbidden"
    refused = await http.delete(f"/api/ops/tasks/{uuid.uuid4()}", headers=learner.headers)
    assert refused.status_code == 403
    page = await http.get("/ops")
    assert page.status_code == 200 and "Operations" in page.text, "the page itself is public; its data is not"

    admin = await _admin(http, ops_stack.admin_name)
    overview = await _overview(http, admin)
    assert {worker["queues"][0] for worker in overview["workers"]} == {"chat", "submissions"}
    assert len(overview["replicas"]) == 1 and overview["replicas"][0]["bus_connected"] is True
    assert overview["kinds"]["chat"]["available"] is True and overview["kinds"]["chat"]["slots"] > 0
    grading = overview["kinds"]["submission"]
    assert grading["available"] is False and "no Chromium at /nonexistent/chromium" in grading["reason"]
    assert {queue["queue"] for queue in overview["queues"]} == {"chat", "submissions"}


async def test_readiness_says_grading_is_unavailable_and_why(http: httpx.AsyncClient) -> None:
    ready = await http.get("/readyz")
    assert ready.status_code == 200, "the API still serves; grading waits in its queue"
    kinds = ready.json()["task_kinds"]
    assert kinds["chat"] == {"available": True, "reason": None, "workers": 1}
    assert kinds["submission"]["available"] is False
    assert (
        kinds["submission"]["reason"] == "no Chromium at /nonexistent/chromium (install chromium, or set CHROMIUM_PATH)"
    )


async def test_the_overview_is_pushed_live_as_tasks_run_and_fail(ops_stack: OpsStack, http: httpx.AsyncClient) -> None:
    admin = await _admin(http, ops_stack.admin_name)
    learner = await register(http)
    before = await _overview(http, admin)
    ws, _ = await open_socket(ops_stack.api.ws_url, admin)
    async with ws:
        asked = await http.post("/ai/chat2", json={"message": "a long answer please"}, headers=learner.headers)
        task_id = asked.json()["task_id"]
        running = await _pushed(
            ws,
            lambda o: o["kinds"]["chat"]["running"] >= 1 and any(t["task_id"] == task_id for t in o["unfinished"]),
            "an overview with the question running",
        )
        line = next(t for t in running["unfinished"] if t["task_id"] == task_id)
        assert line["kind"] == "chat" and line["state"] in ("QUEUED", "STARTED", "PROGRESS")
        assert line["username"].startswith("u")

        await finished_tasks(http, learner, [task_id], timeout_s=60)
        done_before = before["tasks_last_hour"]["chat"].get("SUCCESS", 0)
        done = await _pushed(
            ws,
            lambda o: o["tasks_last_hour"]["chat"].get("SUCCESS", 0) > done_before and not o["unfinished"],
            "an overview with the answer finished",
        )
        assert done["latency"]["chat"]["result"]["count"] >= 1
        assert done["latency"]["chat"]["result"]["p50"] > 0
        assert done["latency"]["chat"]["first"]["p95"] is not None

        # A grading on the worker with no browser fails with its code, and shows as a failure.
        code = {"html": "<p>hi</p>", "css": "", "js": ""}
        graded = await http.post(
            "/submit-test2", json={"exercise_id": "js-greeting", "code": code}, headers=learner.headers
        )
        grade_id = graded.json()["task_id"]
        failed = await _pushed(
            ws, lambda o: any(t["task_id"] == grade_id for t in o["failures"]), "the failed grading in the overview"
        )
        failure = next(t for t in failed["failures"] if t["task_id"] == grade_id)
        assert failure["error"]["code"] == "sandbox_unavailable" and failure["kind"] == "submission"


async def test_an_operator_cancels_a_learners_task_and_the_learner_is_told(
    ops_stack: OpsStack, http: httpx.AsyncClient
) -> None:
    admin = await _admin(http, ops_stack.admin_name)
    learner = await register(http)
    ws, _ = await open_socket(ops_stack.api.ws_url, learner)
    async with ws:
        asked = await http.post("/ai/chat2", json={"message": "stop me"}, headers=learner.headers)
        task_id = asked.json()["task_id"]
        await frames_until(ws, lambda f: f["type"] == "chat_delta", what="the answer to start")
        cancelled = await http.delete(f"/api/ops/tasks/{task_id}", headers=admin.headers)
        assert cancelled.status_code == 202 and cancelled.json()["state"] == "CANCELLED", cancelled.text
        await frames_until(
            ws,
            lambda f: f["type"] == "task_status" and f["data"].get("state") == "CANCELLED",
            what="the learner's tab to hear of the cancel",
        )
    again = await http.delete(f"/api/ops/tasks/{task_id}", headers=admin.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_finished"
    status = (await http.get(f"/api/tasks/{task_id}", headers=learner.headers)).json()
    assert status["state"] == "CANCELLED"


async def test_metrics_want_the_token_and_carry_counters_and_cluster_gauges(http: httpx.AsyncClient) -> None:
    learner = await register(http)
    code = {"html": "<p>hi</p>", "css": "", "js": ""}
    graded = await http.post(
        "/submit-test2", json={"exercise_id": "js-greeting", "code": code}, headers=learner.headers
    )
    await finished_tasks(http, learner, [graded.json()["task_id"]], timeout_s=30)
    assert (await http.get("/metrics")).status_code == 401
    assert (await http.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
    text = (await http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).text
    types = dict(line.split(" ")[2:4] for line in text.splitlines() if line.startswith("# TYPE "))
    assert types["taskwire_tasks_finished_total"] == "counter"
    assert types["taskwire_tasks_submitted_total"] == "counter"
    assert types["taskwire_llm_tokens_total"] == "counter"
    assert types["taskwire_bus_reconnects_total"] == "counter"
    assert types["taskwire_submit_to_result_seconds"] == "histogram"
    assert types["taskwire_queue_backlog"] == "gauge"
    assert types["process_resident_memory_bytes"] == "gauge"
    assert "taskwire_tasks" not in types, "the per-scrape GROUP BY gauge is gone"
    assert 'taskwire_kind_available{kind="submission"} 0.0' in text
    assert 'taskwire_kind_available{kind="chat"} 1.0' in text
    assert 'taskwire_tasks_failed_total{code="sandbox_unavailable",kind="submission"}' in text

    # Every metric the Grafana dashboard and the alert rules use is one this service serves.
    served = set()
    for name, kind in types.items():
        served |= {f"{name}_bucket", f"{name}_count", f"{name}_sum"} if kind == "histogram" else {name}
    docker = Path(__file__).resolve().parents[2] / "docker"
    used = set(
        re.findall(r"\b(?:taskwire|process)_[a-z_]+", (docker / "grafana" / "dashboards" / "taskwire.json").read_text())
    )
    used |= set(re.findall(r"\btaskwire_[a-z_]+", (docker / "alerts.yml").read_text()))
    assert used - served == set(), "the dashboard or the alerts name a metric /metrics does not serve"


async def test_a_stopped_worker_leaves_the_overview_at_once(
    ops_stack: OpsStack, http: httpx.AsyncClient, log_dir: Path
) -> None:
    admin = await _admin(http, ops_stack.admin_name)
    extra = Worker("worker-ops-extra", ops_stack.env, log_dir, queues="chat")
    try:
        ids = {worker["id"] for worker in (await _overview(http, admin))["workers"]}
        assert len(ids) == 3
    finally:
        extra.stop()
    after = await _overview(http, admin)
    assert len(after["workers"]) == 2, "a worker that stops says goodbye; it is not listed until it goes stale"
