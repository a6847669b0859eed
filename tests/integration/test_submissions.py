"""Code submissions through the whole stack: HTTP submit, a real worker grading in Chromium, WebSocket results."""

import asyncio
import json
from pathlib import Path

import httpx

from app.exercises.repository import all_exercises
from tests.conftest import with_own_database
from tests.support.client import finished_tasks, open_socket, register, status_on_result
from tests.support.inspect import history_of
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until

GREETING = all_exercises()["js-greeting"]


async def test_submit_streams_progress_then_the_result(api: ApiServer, worker: Worker, http: httpx.AsyncClient) -> None:
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)
    body = {"exercise_id": "js-greeting", "code": GREETING.answer.model_dump()}
    async with ws:
        response = await http.post("/submit-test2", json=body, headers=account.headers)
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        assert response.headers["location"] == f"/api/tasks/{task_id}"
        frames = await frames_until(
            ws, lambda f: f["type"] == "submission_result" and f["task_id"] == task_id, timeout_s=60, what="the grade"
        )
    progress = [f for f in frames if f["type"] == "submission_progress"]
    assert progress[0]["data"]["stage"] == "preparing"
    evaluation = [f["data"] for f in progress if f["data"]["stage"] == "sandbox_evaluation"]
    total = len(GREETING.checkpoints)
    assert [step["progress"] for step in evaluation] == [i / total for i in range(1, total + 1)]
    assert GREETING.checkpoints[-1].name in evaluation[-1]["message"]
    result = frames[-1]["data"]
    assert result["passed"] is True and frames[-1]["error"] is None
    assert [c["name"] for c in result["checkpoints"]] == [c.name for c in GREETING.checkpoints]
    status = await status_on_result(http, account, task_id, frames[-1]["id"])
    assert status["state"] == "SUCCESS" and status["result"] == result and status["progress"] == 1.0
    assert status["kind"] == "submission"


async def test_a_failing_submission_is_graded_not_failed(
    api: ApiServer, worker: Worker, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    body = {"exercise_id": "js-greeting", "code": GREETING.start_code.model_dump()}
    task_id = (await http.post("/submit-test2", json=body, headers=account.headers)).json()["task_id"]
    status = (await finished_tasks(http, account, [task_id]))[task_id]
    assert status["state"] == "SUCCESS" and status["result"]["passed"] is False
    failed = [c for c in status["result"]["checkpoints"] if not c["passed"]]
    assert failed and all(c["feedback"] for c in failed)


async def test_bad_submissions_are_refused_with_codes(http: httpx.AsyncClient) -> None:
    account = await register(http)
    unknown = await http.post("/submit-test2", json={"exercise_id": "nope", "code": {}}, headers=account.headers)
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "exercise_not_found"
    huge = {"exercise_id": "js-greeting", "code": {"html": "x" * 200_001}}
    too_big = await http.post("/submit-test2", json=huge, headers=account.headers)
    assert too_big.status_code == 422 and too_big.json()["error"]["code"] == "validation_error"
    enormous = {"exercise_id": "js-greeting", "code": {"html": "x" * 2_000_000}}
    over_limit = await http.post("/submit-test2", json=enormous, headers=account.headers)
    assert over_limit.status_code == 413 and over_limit.json()["error"]["code"] == "body_too_large"
    extra = await http.post(
        "/submit-test2", json={"exercise_id": "js-greeting", "code": {"py": "x"}}, headers=account.headers
    )
    assert extra.status_code == 422


async def test_exercises_are_listed_without_their_answers(http: httpx.AsyncClient) -> None:
    listed = (await http.get("/api/exercises")).json()
    assert len(listed) >= 8 and {e["topic"] for e in listed} == {"html", "css", "javascript"}
    detail = (await http.get("/api/exercises/css-colours")).json()
    assert detail["checkpoints"] == [c.name for c in all_exercises()["css-colours"].checkpoints]
    text = json.dumps(detail)
    assert "answer" not in detail and "#ff0000" not in text and "selector" not in text
    missing = await http.get("/api/exercises/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "exercise_not_found"


async def test_twelve_concurrent_submissions_never_use_more_than_five_contexts(
    stack_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    from app.core.embedded_redis import EmbeddedRedis

    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    env = {
        **with_own_database(stack_env, tmp_path),
        "REDIS_URL": redis_server.url,
        "SANDBOX_MAX_CONCURRENCY": "5",
        "SANDBOX_QUEUE_TIMEOUT_S": "60",
        # One learner fills the pool here; the per-learner caps have tests of their own.
        "SANDBOX_MAX_PER_LEARNER": "12",
        "SUBMISSION_MAX_IN_FLIGHT": "12",
    }
    api = ApiServer("api-sandbox-pool", env, log_dir)
    # More Celery slots than contexts: the pool, not the queue, must hold the line at five.
    worker = Worker("worker-sandbox-pool", env, log_dir, queues="submissions", concurrency=12)
    try:
        async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
            account = await register(http)
            exercise = all_exercises()["css-flex-row"]
            body = {"exercise_id": exercise.id, "code": exercise.answer.model_dump()}
            responses = await asyncio.gather(
                *(http.post("/submit-test2", json=body, headers=account.headers) for _ in range(12))
            )
            assert all(r.status_code == 202 for r in responses), [r.text for r in responses if r.status_code != 202]
            task_ids = [r.json()["task_id"] for r in responses]
            statuses = await finished_tasks(http, account, task_ids, timeout_s=120)
        assert [statuses[t]["state"] for t in task_ids] == ["SUCCESS"] * 12
        results = [e for e in history_of(env["REDIS_URL"], account.participant_id) if e["type"] == "submission_result"]
        assert len(results) == 12 and all(e["data"]["passed"] for e in results)
        opened = [
            json.loads(line)["active"]
            for line in worker.log_text().splitlines()
            if line.startswith("{") and json.loads(line).get("msg") == "sandbox context opened"
        ]
        assert len(opened) == 12
        assert max(opened) == 5, f"the pool's own count of open contexts: {opened}"
        lanes = worker.log_text().count("sandbox browser launched")
        assert 1 <= lanes <= 5, f"{lanes} grading lanes (each a browser) for a pool of five"
    finally:
        worker.stop()
        api.stop()
        redis_server.stop()
