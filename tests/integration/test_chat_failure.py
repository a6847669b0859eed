"""A chat that fails: the terminal state is FAILURE with a code, announced by a `chat_result` with `error`."""

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from app.core.embedded_redis import EmbeddedRedis
from tests.conftest import with_own_database
from tests.support.client import open_socket, register
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until


@pytest.fixture(scope="module")
def slow_stack(
    stack_env: dict[str, str], redis_server: EmbeddedRedis, log_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[ApiServer, Worker]]:
    # Its own Redis database, so its queue is not drained by the session's worker
    # (pub/sub ignores database numbers, which is fine: user channels are unique).
    env = {
        **with_own_database(stack_env, tmp_path_factory.mktemp("slow-db")),
        "REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/1",
        "CHAT_SOFT_TIME_LIMIT_S": "1",
        "LLM_OFFLINE_DELAY_MS": "200",
    }
    api = ApiServer("api-slow", env, log_dir)
    worker = Worker("worker-slow", env, log_dir)
    yield api, worker
    worker.stop()
    api.stop()


async def test_a_chat_over_its_time_limit_fails_with_a_timeout_code(slow_stack: tuple[ApiServer, Worker]) -> None:
    api, worker = slow_stack
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        account = await register(http)
        ws, _ = await open_socket(api.ws_url, account)
        async with ws:
            response = await http.post("/ai/chat2", json={"message": "take your time"}, headers=account.headers)
            task_id = response.json()["task_id"]
            frames = await frames_until(
                ws, lambda f: f["type"] == "chat_result" and f["task_id"] == task_id, what="the failed chat_result"
            )
            # The same worker takes the next task: a timeout does not take it down.
            response = await http.post("/ai/chat2", json={"message": "and again"}, headers=account.headers)
            next_id = response.json()["task_id"]
            following = await frames_until(
                ws, lambda f: f["type"] == "chat_result" and f["task_id"] == next_id, what="the next task's result"
            )
        status = (await http.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
        assert following[-1]["error"]["code"] == "timeout"
        worker.assert_running()

    result = frames[-1]
    assert result["error"]["code"] == "timeout" and result["error"]["message"]
    assert any(f["type"] == "chat_delta" for f in frames), "pieces were streamed before the limit"
    assert status["state"] == "FAILURE"
    assert status["error"]["code"] == "timeout" and status["result"] is None
    assert status["last_event_id"] == result["id"]

    lines = [json.loads(line) for line in worker.log_text().splitlines() if line.startswith("{")]
    timed_out = [line for line in lines if line.get("msg") == "task ran past its time limit"]
    assert timed_out, "the worker should log the timeout"
    assert timed_out[0]["task_id"] == task_id and timed_out[0]["participant_id"] == account.participant_id
