"""A chat task from HTTP submit to WebSocket push, through real uvicorn, Celery, Redis and SQLite."""

from typing import Any

import httpx

from app.realtime.envelopes import stream_id_key
from tests.support.client import open_socket, register, status_on_result
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until, wait_until

ENVELOPE_FIELDS = {"v", "id", "type", "task_id", "timestamp", "data", "error"}


def _is_result_for(task_id: str) -> Any:
    return lambda frame: frame.get("type") == "chat_result" and frame.get("task_id") == task_id


async def test_chat_streams_deltas_then_result(api: ApiServer, worker: Worker, http: httpx.AsyncClient) -> None:
    account = await register(http)
    ws, hello = await open_socket(api.ws_url, account)
    assert set(hello["data"]) >= {"connection_id", "recovered", "replayed", "head_id"}
    async with ws:
        response = await http.post(
            "/ai/chat2", json={"message": "Why is my <div> not centred?"}, headers=account.headers
        )
        assert response.status_code == 202, response.text
        body = response.json()
        task_id = body["task_id"]
        assert body["status_url"] == f"/api/tasks/{task_id}"
        assert response.headers["location"] == body["status_url"]
        # The 202 came back before the work was done: the task is not finished yet.
        early = (await http.get(body["status_url"], headers=account.headers)).json()
        assert early["state"] in {"QUEUED", "STARTED"}, early

        frames = await frames_until(ws, _is_result_for(task_id), what="the chat_result envelope")

    for frame in frames:
        assert set(frame) == ENVELOPE_FIELDS, frame
        assert frame["v"] == 1 and frame["task_id"] == task_id
        assert frame["timestamp"].endswith("Z")
    ids = [stream_id_key(frame["id"]) for frame in frames]
    assert ids == sorted(ids) and len(set(ids)) == len(ids), "envelope ids must strictly increase"

    assert frames[0]["type"] == "task_status" and frames[0]["data"]["state"] == "STARTED"
    deltas = [frame["data"]["delta"] for frame in frames if frame["type"] == "chat_delta"]
    result = frames[-1]
    assert len(deltas) > 10, "the answer should arrive piece by piece"
    assert result["error"] is None
    assert "".join(deltas) == result["data"]["message"]
    assert "Built-in tutor" in result["data"]["message"] and "not centred?" in result["data"]["message"]
    assert result["data"]["model"] == "offline"

    status = await status_on_result(http, account, task_id, result["id"])
    assert status["state"] == "SUCCESS"
    assert status["kind"] == "chat"
    assert status["progress"] == 1.0
    assert status["result"]["message"] == result["data"]["message"]
    assert status["started_at"] is not None and status["finished_at"] >= status["started_at"]


async def test_result_reaches_a_socket_held_by_another_replica(
    api: ApiServer, api_b: ApiServer, worker: Worker, http: httpx.AsyncClient, http_b: httpx.AsyncClient
) -> None:
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)  # the socket lives on replica A
    async with ws:
        response = await http_b.post("/ai/chat2", json={"message": "hello from B"}, headers=account.headers)
        assert response.status_code == 202, response.text
        task_id = response.json()["task_id"]
        frames = await frames_until(ws, _is_result_for(task_id), what="the result on replica A")
    assert "hello from B" in frames[-1]["data"]["message"]
    status = (await http_b.get(f"/api/tasks/{task_id}", headers=account.headers)).json()
    assert status["state"] == "SUCCESS"


async def test_every_tab_of_a_user_gets_every_envelope(api: ApiServer, worker: Worker, http: httpx.AsyncClient) -> None:
    account = await register(http)
    tab_one, _ = await open_socket(api.ws_url, account, auth="frame")
    # Another spelling of the same UUID in the path is the same participant.
    tab_two, _ = await open_socket(api.ws_url, account, auth="query", path_id=account.participant_id.upper())
    async with tab_one, tab_two:
        response = await http.post("/ai/chat2", json={"message": "two tabs"}, headers=account.headers)
        task_id = response.json()["task_id"]
        first = await frames_until(tab_one, _is_result_for(task_id), what="the result on tab one")
        second = await frames_until(tab_two, _is_result_for(task_id), what="the result on tab two")
    assert [f["id"] for f in first] == [f["id"] for f in second]


async def test_reconnect_with_last_id_resumes_without_gap_or_duplicate(
    api: ApiServer, worker: Worker, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)
    async with ws:
        response = await http.post("/ai/chat2", json={"message": "resume me"}, headers=account.headers)
        task_id = response.json()["task_id"]
        seen = await frames_until(ws, lambda f: f["type"] == "chat_delta", what="the first delta")
    # The page "reloads" mid-answer; the task finishes while no socket is open.
    wait_until(
        lambda: httpx.get(f"{api.base_url}/api/tasks/{task_id}", headers=account.headers).json()["state"] == "SUCCESS",
        timeout_s=30,
        what="the chat task to finish",
    )
    ws, hello = await open_socket(api.ws_url, account, last_id=seen[-1]["id"])
    async with ws:
        rest = await frames_until(ws, _is_result_for(task_id), what="the result after resuming")
    assert hello["data"]["recovered"] is True
    assert hello["data"]["replayed"] == len(rest), "everything missed must come from history"
    assert hello["data"]["head_id"] == rest[-1]["id"]
    ids = [f["id"] for f in seen + rest]
    assert len(ids) == len(set(ids)), "a resumed stream must not repeat envelopes"
    keys = [stream_id_key(i) for i in ids]
    assert keys == sorted(keys)
    deltas = "".join(f["data"]["delta"] for f in seen + rest if f["type"] == "chat_delta")
    assert deltas == rest[-1]["data"]["message"], "a resumed stream must not miss envelopes"


async def test_metrics_reflect_the_traffic(api: ApiServer, worker: Worker, http: httpx.AsyncClient) -> None:
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)
    async with ws:
        response = await http.post("/ai/chat2", json={"message": "count me"}, headers=account.headers)
        task_id = response.json()["task_id"]
        await frames_until(ws, _is_result_for(task_id), what="the result")
        text = (await http.get("/metrics")).text

    def value(name: str) -> float:
        lines = [line for line in text.splitlines() if line.startswith(name + " ") or line.startswith(name + "{")]
        assert lines, f"{name} is missing from /metrics"
        return sum(float(line.rsplit(" ", 1)[1]) for line in lines)

    assert value("taskwire_ws_connections") >= 1
    assert value("taskwire_ws_messages_delivered_total") >= 3
    assert value("taskwire_bus_lag_seconds_count") >= 3
    assert value("taskwire_bus_connected") == 1
    assert value('taskwire_tasks_finished_total{kind="chat",state="SUCCESS"}') >= 1
    assert value('taskwire_tasks_submitted_total{kind="chat"}') >= 1
    assert value('taskwire_queue_backlog{queue="chat"}') == 0
    assert value("taskwire_workers") >= 1
    assert value('taskwire_kind_available{kind="chat"}') == 1
    assert value("process_resident_memory_bytes") > 0
    assert value('taskwire_http_request_duration_seconds_count{method="POST",route="/ai/chat2",status="202"}') >= 1
    assert value('taskwire_submit_to_first_message_seconds_count{kind="chat"}') >= 1
    assert value('taskwire_submit_to_result_seconds_count{kind="chat"}') >= 1
    assert value('taskwire_submit_to_result_seconds_bucket{kind="chat",le="+Inf"}') == value(
        'taskwire_submit_to_result_seconds_count{kind="chat"}'
    )
