"""Task status, listing, idempotency and cancellation of queued tasks, on an API with no worker behind it."""

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import open_socket, register
from tests.support.inspect import history_of, queued_messages, tasks_of
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until, wait_until


@pytest.fixture(scope="module")
def idle_env(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    # Its own Redis database: the session's worker never consumes these queues.
    env = with_own_database(stack_env, tmp_path_factory.mktemp("idle-db"))
    return {**env, "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/2"}


@pytest.fixture(scope="module")
def idle_api(idle_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-no-worker", idle_env, log_dir)
    yield server
    server.stop()


@pytest.fixture
async def idle_http(idle_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=idle_api.base_url, timeout=10) as client:
        yield client


async def test_a_just_submitted_task_is_queued_and_listed(idle_http: httpx.AsyncClient) -> None:
    account = await register(idle_http)
    first = (await idle_http.post("/ai/chat2", json={"message": "one"}, headers=account.headers)).json()
    second = (await idle_http.post("/ai/chat2", json={"message": "two"}, headers=account.headers)).json()
    status = (await idle_http.get(first["status_url"], headers=account.headers)).json()
    assert status["state"] == "QUEUED" and status["progress"] == 0 and status["started_at"] is None
    assert status["kind"] == "chat" and status["result"] is None and status["error"] is None

    listed = (await idle_http.get("/api/tasks", headers=account.headers)).json()
    assert [t["task_id"] for t in listed] == [second["task_id"], first["task_id"]], "newest first"
    assert len((await idle_http.get("/api/tasks?limit=1", headers=account.headers)).json()) == 1
    assert (await idle_http.get("/api/tasks?state=SUCCESS", headers=account.headers)).json() == []
    assert len((await idle_http.get("/api/tasks?kind=chat&state=QUEUED", headers=account.headers)).json()) == 2
    bad = await idle_http.get("/api/tasks?state=PENDINGISH", headers=account.headers)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "validation_error"
    stranger = await register(idle_http)
    assert (await idle_http.get("/api/tasks", headers=stranger.headers)).json() == []


async def test_the_same_idempotency_key_returns_the_first_task_and_enqueues_once(
    idle_http: httpx.AsyncClient, idle_env: dict[str, str]
) -> None:
    account = await register(idle_http)
    headers = {**account.headers, "Idempotency-Key": "click-1"}
    body = {"message": "only once please"}
    first = await idle_http.post("/ai/chat2", json=body, headers=headers)
    again = await idle_http.post("/ai/chat2", json=body, headers=headers)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json()
    task_id = first.json()["task_id"]
    assert queued_messages(idle_env["REDIS_URL"]).count(task_id) == 1
    assert len(tasks_of(idle_env["DATABASE_URL"], account.participant_id)) == 1

    different = await idle_http.post("/ai/chat2", json={"message": "something else"}, headers=headers)
    assert different.status_code == 409 and different.json()["error"]["code"] == "idempotency_key_reused"
    # Keys are per user: another user's identical key is a new task.
    other = await register(idle_http)
    theirs = await idle_http.post("/ai/chat2", json=body, headers={**other.headers, "Idempotency-Key": "click-1"})
    assert theirs.status_code == 202 and theirs.json()["task_id"] != task_id
    # A fresh key is a fresh task.
    fresh = await idle_http.post("/ai/chat2", json=body, headers={**account.headers, "Idempotency-Key": "click-2"})
    assert fresh.json()["task_id"] != task_id


async def test_cancelling_a_queued_task_and_then_letting_a_worker_see_it(
    idle_api: ApiServer, idle_http: httpx.AsyncClient, idle_env: dict[str, str], log_dir: Path
) -> None:
    account = await register(idle_http)
    ws, _ = await open_socket(idle_api.ws_url, account)
    task_id = (await idle_http.post("/ai/chat2", json={"message": "never mind"}, headers=account.headers)).json()[
        "task_id"
    ]
    response = await idle_http.delete(f"/api/tasks/{task_id}", headers=account.headers)
    assert response.status_code == 202 and response.json()["state"] == "CANCELLED"
    async with ws:
        frames = await frames_until(ws, lambda f: f.get("task_id") == task_id, what="the CANCELLED envelope")
    assert frames[-1]["type"] == "task_status" and frames[-1]["data"]["state"] == "CANCELLED"
    again = await idle_http.delete(f"/api/tasks/{task_id}", headers=account.headers)
    assert again.status_code == 409 and again.json()["error"]["code"] == "task_finished"
    missing = await idle_http.delete(f"/api/tasks/{uuid.uuid4()}", headers=account.headers)
    assert missing.status_code == 404

    # A worker that now receives the message acknowledges it without running anything.
    worker = Worker("worker-late", idle_env, log_dir)
    try:
        wait_until(lambda: task_id not in queued_messages(idle_env["REDIS_URL"]), timeout_s=30, what="consumption")
        wait_until(
            lambda: "acknowledging a duplicate delivery" in worker.log_text() or "revoked" in worker.log_text(),
            timeout_s=15,
            what="the worker to skip the cancelled task",
        )
    finally:
        worker.stop()
    envelopes = [e for e in history_of(idle_env["REDIS_URL"], account.participant_id) if e["task_id"] == task_id]
    assert [(e["type"], e["data"].get("state")) for e in envelopes] == [("task_status", "CANCELLED")]
    status = (await idle_http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
    assert status["state"] == "CANCELLED" and status["last_event_id"] == envelopes[0]["id"]
