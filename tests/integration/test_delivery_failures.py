"""Delivery through failures: a killed pub/sub connection, a Redis restart, a replica shut down mid-stream."""

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from app.core.embedded_redis import EmbeddedRedis
from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import EnvelopePublisher
from tests.conftest import with_own_database
from tests.support.client import open_socket, register
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import frames_until, next_frame, wait_until


def _ready(api: ApiServer) -> int:
    try:
        return httpx.get(f"{api.base_url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


@pytest.fixture
def client(redis_server: EmbeddedRedis) -> Iterator[redis.Redis]:
    """A plain client of the stack's Redis: it kills the replicas' subscriptions, and publishes."""
    with redis.Redis.from_url(redis_server.url, decode_responses=True) as connection:
        yield connection


@pytest.fixture
def publisher(client: redis.Redis) -> EnvelopePublisher:
    return EnvelopePublisher(client, history_maxlen=5000, history_ttl_s=3600)


async def test_messages_published_while_the_listener_reconnects_still_arrive(
    api: ApiServer, http: httpx.AsyncClient, client: redis.Redis, publisher: EnvelopePublisher
) -> None:
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)
    before = api.log_text().count("caught up sockets from history")
    killed = client.client_kill_filter(_type="pubsub")
    assert killed >= 1
    # Published while every replica's listener is between connections.
    in_gap = [
        publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": str(i)}) for i in range(20)
    ]
    wait_until(
        lambda: api.log_text().count("caught up sockets from history") > before,
        timeout_s=15,
        what="the replica to re-subscribe and catch its sockets up",
    )
    after = publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "after"})
    async with ws:
        frames = await frames_until(ws, lambda f: f.get("id") == after, what="every message, then the live one")
    assert [f["id"] for f in frames] == [*in_gap, after]
    assert _ready(api) == 200


async def test_envelopes_published_without_pause_through_a_reconnect_arrive_once_each_in_order(
    api: ApiServer, http: httpx.AsyncClient, client: redis.Redis, publisher: EnvelopePublisher
) -> None:
    # Envelopes keep coming while the listener re-subscribes: the first ones after the user's
    # subscription is back arrive before the listener has heard its canary, and must wait for
    # the catch-up that fills the outage instead of overtaking it.
    account = await register(http)
    ws, _ = await open_socket(api.ws_url, account)
    published: list[str] = []
    received: list[str] = []
    stop = asyncio.Event()

    def publish_until_stopped() -> None:
        while not stop.is_set():
            published.append(publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "x"}))

    async def read() -> None:
        async for raw in ws:
            frame = json.loads(raw)
            if frame["type"] == "chat_delta":
                received.append(frame["id"])

    reader = asyncio.create_task(read())
    try:
        before = api.log_text().count("caught up sockets from history")
        publishing = asyncio.create_task(asyncio.to_thread(publish_until_stopped))
        await asyncio.sleep(0.2)
        assert client.client_kill_filter(_type="pubsub") >= 1
        await asyncio.to_thread(
            wait_until,
            lambda: api.log_text().count("caught up sockets from history") > before,
            timeout_s=15,
            what="the replica to re-subscribe and catch its sockets up",
        )
        await asyncio.sleep(0.3)
        stop.set()
        await publishing
        await asyncio.to_thread(
            wait_until, lambda: published[-1] in received, timeout_s=15, what="the last envelope to arrive"
        )
    finally:
        stop.set()
        reader.cancel()
        await ws.close()
    assert received == published, f"{len(published)} published, {len(received)} received"


@pytest.fixture
def own_stack(
    stack_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> Iterator[tuple[EmbeddedRedis, ApiServer, Worker]]:
    """An API and a worker on a redis-server this test may kill."""
    redis_server = EmbeddedRedis(tmp_path / "redis").start()
    env = {**with_own_database(stack_env, tmp_path), "REDIS_URL": redis_server.url, "BUS_CANARY_INTERVAL_S": "1"}
    api = ApiServer("api-own-redis", env, log_dir)
    worker = Worker("worker-own-redis", env, log_dir)
    try:
        yield redis_server, api, worker
    finally:
        worker.stop()
        api.stop()
        redis_server.stop()


async def _chat(http: httpx.AsyncClient, headers: dict[str, str], ws: Any, message: str) -> list[dict[str, Any]]:
    response = await http.post("/ai/chat2", json={"message": message}, headers=headers)
    assert response.status_code == 202, response.text
    task_id = response.json()["task_id"]
    return await frames_until(
        ws, lambda f: f.get("type") == "chat_result" and f["task_id"] == task_id, timeout_s=60, what="the result"
    )


async def test_redis_killed_and_restarted_under_a_running_stack(
    own_stack: tuple[EmbeddedRedis, ApiServer, Worker],
) -> None:
    redis_server, api, worker = own_stack
    async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
        account = await register(http)
        ws, _ = await open_socket(api.ws_url, account)
        async with ws:
            assert (await _chat(http, account.headers, ws, "before the crash"))[-1]["error"] is None

            assert redis_server.process is not None
            redis_server.process.kill()  # kill -9: no shutdown, nothing saved
            redis_server.process.wait()
            wait_until(lambda: _ready(api) == 503, timeout_s=15, what="/readyz to report the outage")
            # A socket opened meanwhile is told to come back later, not dropped without a code.
            async with connect(f"{api.ws_url}/ws/user/{account.participant_id}?token={account.token}") as late:
                with pytest.raises(ConnectionClosed) as closed:
                    await asyncio.wait_for(late.recv(), 15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013, closed.value
            await asyncio.sleep(1)
            redis_server.start()
            wait_until(lambda: _ready(api) == 200, timeout_s=30, what="/readyz to recover")

            # History is gone with the unpersisted Redis: the socket is told so, then works on.
            notice = await next_frame(ws, timeout_s=15, what="a hello saying history was lost")
            while notice["type"] == "ping":
                notice = await next_frame(ws, timeout_s=15, what="a hello saying history was lost")
            assert notice["type"] == "hello" and notice["data"]["recovered"] is False
            frames = await _chat(http, account.headers, ws, "after the restart")
    worker.assert_running()
    assert frames[-1]["error"] is None and "after the restart" in frames[-1]["data"]["message"]


async def test_a_replica_shut_down_mid_stream_hands_its_clients_to_another(
    api: ApiServer, worker: Worker, stack_env: dict[str, str], log_dir: Path
) -> None:
    doomed = ApiServer("api-doomed", stack_env, log_dir)
    try:
        async with httpx.AsyncClient(base_url=doomed.base_url, timeout=10) as http:
            account = await register(http)
            ws, _ = await open_socket(doomed.ws_url, account)
            response = await http.post("/ai/chat2", json={"message": "survive the restart"}, headers=account.headers)
        task_id = response.json()["task_id"]
        received = await frames_until(ws, lambda f: f["type"] == "chat_delta", what="the first delta")
        doomed.process.terminate()  # SIGTERM: a rolling restart
        with pytest.raises(ConnectionClosed) as closed:
            while True:
                frame = json.loads(await asyncio.wait_for(ws.recv(), timeout=15))
                if frame["type"] != "ping":
                    received.append(frame)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1012
        # uvicorn re-raises the signal after a graceful shutdown, so the status is -SIGTERM.
        assert doomed.process.wait(timeout=30) in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in doomed.log_text()
    finally:
        doomed.stop()

    ws, hello = await open_socket(api.ws_url, account, last_id=received[-1]["id"])
    assert hello["data"]["recovered"] is True
    async with ws:
        received += await frames_until(
            ws, lambda f: f["type"] == "chat_result" and f["task_id"] == task_id, what="the rest of the answer"
        )
    ids = [f["id"] for f in received]
    assert len(ids) == len(set(ids))
    deltas = "".join(f["data"]["delta"] for f in received if f["type"] == "chat_delta")
    assert deltas == received[-1]["data"]["message"]
