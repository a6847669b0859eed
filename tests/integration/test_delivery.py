"""Delivery that loses nothing (SPEC §5): resume, many tabs on many replicas, slow consumers, restarts."""

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from redis.cluster import RedisCluster

from app.realtime.envelopes import EnvelopeType, stream_id_key
from app.realtime.publisher import EnvelopePublisher
from tests.support.client import Account, StalledClient, finished_tasks, open_socket, register, status_on_result
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until, next_frame

# The whole suite runs twice: with the bus on one Redis, and on a three-primary Redis Cluster.
ONE_REDIS, CLUSTER = "one Redis", "Redis Cluster"


@pytest.fixture(scope="module", params=[ONE_REDIS, CLUSTER])
def bus(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def bus_env(bus: str, request: pytest.FixtureRequest) -> dict[str, str]:
    env: dict[str, str] = request.getfixturevalue("stack_env" if bus == ONE_REDIS else "cluster_env")
    return env


@pytest.fixture(scope="module")
def api(api: ApiServer, bus: str, request: pytest.FixtureRequest) -> ApiServer:
    return api if bus == ONE_REDIS else request.getfixturevalue("cluster_api")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def api_b(api_b: ApiServer, bus: str, request: pytest.FixtureRequest) -> ApiServer:
    return api_b if bus == ONE_REDIS else request.getfixturevalue("cluster_api_b")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def worker(worker: Worker, bus: str, request: pytest.FixtureRequest) -> Worker:
    return worker if bus == ONE_REDIS else request.getfixturevalue("cluster_worker")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def publisher(bus: str, bus_env: dict[str, str]) -> Iterator[EnvelopePublisher]:
    client = (
        redis.Redis.from_url(bus_env["REDIS_URL"], decode_responses=True)
        if bus == ONE_REDIS
        else RedisCluster.from_url(bus_env["BUS_REDIS_URL"], decode_responses=True)
    )
    yield EnvelopePublisher(client, history_maxlen=1000, history_ttl_s=3600)  # type: ignore[arg-type]
    client.close()


def _publish(publisher: EnvelopePublisher, account: Account, count: int, *, start: int = 0) -> list[str]:
    return [
        publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "task-x", {"delta": f"m{i}"})
        for i in range(start, start + count)
    ]


async def test_reconnect_gets_exactly_the_missed_messages_then_live(
    api: ApiServer, http: httpx.AsyncClient, publisher: EnvelopePublisher
) -> None:
    account = await register(http)
    ws, hello = await open_socket(api.ws_url, account)
    first = _publish(publisher, account, 1)
    assert (await next_frame(ws))["id"] == first[0]
    await ws.close()

    missed = _publish(publisher, account, 50, start=1)
    ws, hello = await open_socket(api.ws_url, account, last_id=first[0])
    async with ws:
        assert hello["data"] == {**hello["data"], "recovered": True, "replayed": 50, "head_id": missed[-1]}
        replayed = [await next_frame(ws, what=f"replayed message {i}") for i in range(50)]
        live = _publish(publisher, account, 1, start=51)
        after = await next_frame(ws, what="the live message after the replay")
    assert [f["id"] for f in replayed] == missed
    assert [f["data"]["delta"] for f in replayed] == [f"m{i}" for i in range(1, 51)]
    assert after["id"] == live[0]


async def test_a_replay_of_many_pages_arrives_whole_in_order_with_live_ones_after(
    api: ApiServer, http: httpx.AsyncClient, publisher: EnvelopePublisher
) -> None:
    # A replay is read a page (64 envelopes) at a time as the socket takes it; live envelopes
    # published meanwhile wait for its end.
    account = await register(http)
    first = _publish(publisher, account, 1)
    missed = _publish(publisher, account, 300, start=1)
    ws, hello = await open_socket(api.ws_url, account, last_id=first[0])
    async with ws:
        assert hello["data"]["replayed"] == 300 and hello["data"]["recovered"] is True
        replayed = [await next_frame(ws, what=f"replayed message {i}") for i in range(100)]
        live = _publish(publisher, account, 2, start=301)
        replayed += [await next_frame(ws, what=f"replayed message {i}") for i in range(100, 300)]
        after = [await next_frame(ws, what="the live messages after the replay") for _ in range(2)]
    assert [f["id"] for f in replayed] == missed
    assert [f["id"] for f in after] == live


async def test_resume_frame_on_an_open_socket(
    api: ApiServer, http: httpx.AsyncClient, publisher: EnvelopePublisher
) -> None:
    account = await register(http)
    ids = _publish(publisher, account, 5)
    ws, hello = await open_socket(api.ws_url, account)
    async with ws:
        assert hello["data"]["replayed"] == 0 and hello["data"]["head_id"] == ids[-1]
        await ws.send(json.dumps({"type": "resume", "last_id": ids[1]}))
        again = await next_frame(ws, what="the hello answering resume")
        replayed = [await next_frame(ws) for _ in range(3)]
        await ws.send(json.dumps({"type": "resume", "last_id": "yesterday"}))
        error = await next_frame(ws, what="an error for a bad last_id")
        malformed = []
        for last_id in ("1_0-0", "1" * 23, "\u0661\u0662-0", "18446744073709551616-0", 12):
            await ws.send(json.dumps({"type": "resume", "last_id": last_id}))
            malformed.append(await next_frame(ws, what=f"an error for last_id {last_id!r}"))
        await ws.send(json.dumps({"type": "subscribe"}))
        unknown = await next_frame(ws, what="an error for an unknown frame type")
    assert again["type"] == "hello" and again["data"]["replayed"] == 3 and again["data"]["recovered"] is True
    assert [f["id"] for f in replayed] == ids[2:]
    assert error["type"] == "error" and error["data"]["code"] == "bad_last_id"
    assert [(f["type"], f["data"]["code"]) for f in malformed] == [("error", "bad_last_id")] * 5, malformed
    assert unknown["type"] == "error" and unknown["data"]["code"] == "unknown_frame_type"


async def test_reconnecting_while_deltas_stream_leaves_no_gap_and_no_duplicate(
    api: ApiServer, api_b: ApiServer, worker: Worker, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)
    response = await http.post("/ai/chat2", json={"message": "reconnect me often"}, headers=account.headers)
    task_id = response.json()["task_id"]
    received: list[dict[str, Any]] = []
    replicas = [api_b, api]
    for hop in range(4):
        # Take a few envelopes, then drop the socket and come back (on alternating replicas).
        for _ in range(3 + hop):
            frame = await next_frame(ws, what="an envelope of the streaming answer")
            if frame["type"] != "ping":
                received.append(frame)
            if frame["type"] == "chat_result":
                break
        await ws.close()
        if received[-1]["type"] == "chat_result":
            break
        ws, _ = await open_socket(replicas[hop % 2].ws_url, account, last_id=received[-1]["id"])
    if received[-1]["type"] != "chat_result":
        async with ws:
            received += await frames_until(ws, lambda f: f["type"] == "chat_result", what="the chat result")
    ids = [f["id"] for f in received]
    assert len(ids) == len(set(ids)), "no envelope may arrive twice across reconnects"
    assert [stream_id_key(i) for i in ids] == sorted(stream_id_key(i) for i in ids)
    deltas = "".join(f["data"]["delta"] for f in received if f["type"] == "chat_delta" and f["task_id"] == task_id)
    assert deltas == received[-1]["data"]["message"]


async def test_three_sockets_on_two_replicas_all_get_everything(
    api: ApiServer, api_b: ApiServer, worker: Worker, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    sockets = [
        (await open_socket(api.ws_url, account))[0],
        (await open_socket(api_b.ws_url, account, auth="query"))[0],
        (await open_socket(api_b.ws_url, account))[0],
    ]
    response = await http.post("/ai/chat2", json={"message": "for every tab"}, headers=account.headers)
    task_id = response.json()["task_id"]
    streams = []
    for ws in sockets:
        async with ws:
            streams.append(
                await frames_until(ws, lambda f: f["type"] == "chat_result" and f["task_id"] == task_id, what="result")
            )
    assert len(streams[0]) > 10
    assert [f["id"] for f in streams[0]] == [f["id"] for f in streams[1]] == [f["id"] for f in streams[2]]


async def test_a_task_finished_before_the_first_connect_is_replayed_from_zero(
    api: ApiServer, worker: Worker, http: httpx.AsyncClient
) -> None:
    account = await register(http)
    response = await http.post("/ai/chat2", json={"message": "I was offline"}, headers=account.headers)
    task_id = response.json()["task_id"]
    status = (await finished_tasks(http, account, [task_id]))[task_id]
    assert status["state"] == "SUCCESS"
    ws, hello = await open_socket(api.ws_url, account, last_id="0")
    async with ws:
        frames = await frames_until(ws, lambda f: f["type"] == "chat_result", what="the replayed result")
    assert hello["data"]["replayed"] == len(frames)
    assert frames[0]["type"] == "task_status"
    assert "".join(f["data"]["delta"] for f in frames if f["type"] == "chat_delta") == frames[-1]["data"]["message"]
    await status_on_result(http, account, task_id, frames[-1]["id"])


@pytest.fixture(scope="module")
def small_queue_api(bus_env: dict[str, str], log_dir: Path) -> Iterator[ApiServer]:
    server = ApiServer("api-small-queue", {**bus_env, "WS_SEND_QUEUE_SIZE": "8"}, log_dir)
    yield server
    server.stop()


async def test_a_socket_that_never_reads_is_closed_with_4408_and_others_keep_receiving(
    small_queue_api: ApiServer, publisher: EnvelopePublisher
) -> None:
    async with httpx.AsyncClient(base_url=small_queue_api.base_url, timeout=10) as http:
        account = await register(http)
    stalled = StalledClient(small_queue_api.ws_url, account)
    healthy, _ = await open_socket(small_queue_api.ws_url, account)
    pad = "x" * 32_000

    def publish_all() -> list[str]:
        return [
            publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "big", {"delta": pad, "n": i})
            for i in range(400)
        ]

    async with healthy:
        # 12.8 MB in all: the healthy client reads while they are published, as a browser would.
        reading = asyncio.create_task(
            frames_until(healthy, lambda f: f["data"].get("n") == 399, timeout_s=60, what="all 400 envelopes")
        )
        ids = await asyncio.to_thread(publish_all)
        got = await reading
    assert [f["id"] for f in got] == ids, "the healthy socket must get every envelope, in order"

    # What the stuck socket still finds in its buffers ends with the server's close frame.
    assert await asyncio.to_thread(stalled.read_until_closed) == 4408
