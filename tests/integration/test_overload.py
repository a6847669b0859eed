"""Load shedding: a full queue refuses submits with 503 `overloaded`, writes nothing, and admits again once drained."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import Account, finished_tasks, register
from tests.support.inspect import queued_messages, tasks_of
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import wait_until

MAX_BACKLOG = 4


@pytest.fixture
def shedding_api(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, tmp_path: Path, log_dir: Path
) -> Iterator[tuple[ApiServer, dict[str, str]]]:
    """A replica on its own Redis database with no worker yet, so its chat queue only fills."""
    env = {
        **with_own_database(stack_env, tmp_path),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/9",
        "QUEUE_MAX_BACKLOG": str(MAX_BACKLOG),
        "SUBMIT_RATE_LIMIT": "6/60",
    }
    redis.Redis.from_url(env["REDIS_URL"]).flushdb()  # the test's own database number
    api = ApiServer("api-shedding", env, log_dir)
    yield api, env
    api.stop()


async def _chat(http: httpx.AsyncClient, account: Account, message: str) -> httpx.Response:
    return await http.post("/ai/chat2", json={"message": message}, headers=account.headers)


async def test_a_full_queue_sheds_submits_until_workers_drain_it(
    shedding_api: tuple[ApiServer, dict[str, str]], log_dir: Path
) -> None:
    api, env = shedding_api
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        first, second = await register(http), await register(http)
        accepted = [await _chat(http, account, "fill") for account in (first, second, first, second)]
        assert [r.status_code for r in accepted] == [202] * MAX_BACKLOG

        shed = await _chat(http, first, "one too many")
        assert shed.status_code == 503, shed.text
        assert shed.json()["error"]["code"] == "overloaded"
        assert int(shed.headers["retry-after"]) >= 1
        assert len(tasks_of(env["DATABASE_URL"], first.participant_id)) == 2, "a shed submit writes no task"
        assert len(queued_messages(env["REDIS_URL"])) == MAX_BACKLOG, "and enqueues nothing"

        # Each queue has its own backlog: grading is still admitted while chat is full.
        code = {"html": "<h1>Hello</h1>", "css": "", "js": ""}
        grading = await http.post(
            "/submit-test2", json={"exercise_id": "html-first-page", "code": code}, headers=first.headers
        )
        assert grading.status_code == 202, grading.text

        worker = Worker("worker-shedding", env, log_dir)
        try:
            wait_until(lambda: not queued_messages(env["REDIS_URL"]), timeout_s=30, what="the worker to drain chat")
            # The shed submit used none of the budget: `first` has 3 of 6 (two chats, one grading).
            again = [await _chat(http, first, f"after the drain {i}") for i in range(3)]
            assert [r.status_code for r in again] == [202, 202, 202], [r.text for r in again]
            task_ids = [r.json()["task_id"] for r in accepted + again]
            statuses = await finished_tasks(http, first, [r.json()["task_id"] for r in accepted[::2] + again])
            statuses |= await finished_tasks(http, second, [r.json()["task_id"] for r in accepted[1::2]])
        finally:
            worker.stop()
    assert {statuses[t]["state"] for t in task_ids} == {"SUCCESS"}, "every accepted task ran"
    metrics = httpx.get(f"{api.base_url}/metrics").text
    assert 'taskwire_submits_shed_total{kind="chat"} 1.0' in metrics
