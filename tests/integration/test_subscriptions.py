"""Replicas subscribe to the users they hold, not to everyone (issue 18): and lose nothing doing so."""

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import redis.asyncio as aioredis
from celery import Celery

from app.core.embedded_redis import EmbeddedRedis
from app.realtime.envelopes import EnvelopeType, history_key, user_channel
from app.realtime.publisher import AsyncEnvelopePublisher
from app.task_kinds import REGISTRY
from tests.conftest import with_own_database
from tests.support.client import open_socket, register
from tests.support.stack import ApiServer, Worker
from tests.support.waiting import next_frame


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    await connection.aclose()


async def _subscribers(client: aioredis.Redis, participant_id: str) -> int:
    (_, count), *_ = await client.pubsub_numsub(user_channel(participant_id))
    return int(count)


async def _until(condition: object, what: str, timeout_s: float = 10) -> None:
    deadline = time.monotonic() + timeout_s
    while not await condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.02)


def _received(metrics_text: str) -> float:
    line = next(line for line in metrics_text.splitlines() if line.startswith("taskwire_bus_messages_received_total "))
    return float(line.split()[1])


async def test_no_process_holds_a_pattern_subscription_and_remote_control_still_works(
    stack_env: dict[str, str], tmp_path: Path, log_dir: Path
) -> None:
    # On a Redis of its own (pub/sub is server-wide), with an API replica and a worker: the
    # replica subscribes by user, and the worker's Celery remote control (kombu's broadcasts)
    # by name, not by pattern (tasks/broker_transport.py).
    with EmbeddedRedis(tmp_path / "redis") as own:
        env = {**with_own_database(stack_env, tmp_path), "REDIS_URL": own.url}
        api = ApiServer("api-no-patterns", env, log_dir)
        worker = Worker("worker-no-patterns", env, log_dir)
        client = aioredis.Redis.from_url(own.url, decode_responses=True)
        try:
            async with httpx.AsyncClient(base_url=api.base_url, timeout=10) as http:
                dave = await register(http)
                ws, _ = await open_socket(api.ws_url, dave)
                async with ws:
                    assert await client.pubsub_numpat() == 0
                    assert await _subscribers(client, dave.participant_id) == 1
            # Broadcasts still reach every worker process: each answers a ping.
            celery = Celery(broker=own.url)
            try:
                replies = await asyncio.to_thread(celery.control.ping, timeout=2)
            finally:
                celery.close()
            assert len(replies) == len(REGISTRY.queues), replies
            assert await client.pubsub_numpat() == 0
        finally:
            await client.aclose()
            worker.stop()
            api.stop()


async def test_a_replica_listens_only_to_the_users_it_holds(
    api: ApiServer, api_b: ApiServer, http: httpx.AsyncClient, client: aioredis.Redis
) -> None:
    alice, bob = await register(http), await register(http)
    ws_a, _ = await open_socket(api.ws_url, alice)
    ws_b, _ = await open_socket(api_b.ws_url, bob)
    async with ws_a, ws_b:
        assert await _subscribers(client, alice.participant_id) == 1
        assert await _subscribers(client, bob.participant_id) == 1
        # 200 envelopes for alice reach replica A only: B hears its canary and nothing else.
        async with httpx.AsyncClient(timeout=10) as plain:
            before = _received((await plain.get(f"{api_b.base_url}/metrics")).text)
            publisher = AsyncEnvelopePublisher(client, history_maxlen=1000, history_ttl_s=3600)
            ids = [
                await publisher.publish(alice.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": str(i)})
                for i in range(200)
            ]
            got = [(await next_frame(ws_a, what=f"envelope {i}"))["id"] for i in range(200)]
            after = _received((await plain.get(f"{api_b.base_url}/metrics")).text)
        assert got == ids
        assert after - before < 5, f"replica B received {after - before} messages for a user it does not hold"
    await _until(lambda: _zero(client, alice.participant_id), "alice's channel to be unsubscribed")
    await _until(lambda: _zero(client, bob.participant_id), "bob's channel to be unsubscribed")


async def _zero(client: aioredis.Redis, participant_id: str) -> bool:
    return await _subscribers(client, participant_id) == 0


async def test_a_users_tabs_on_two_replicas_subscribe_once_each_and_the_last_tab_unsubscribes(
    api: ApiServer, api_b: ApiServer, http: httpx.AsyncClient, client: aioredis.Redis
) -> None:
    carol = await register(http)
    tabs = [await open_socket(url, carol) for url in (api.ws_url, api.ws_url, api_b.ws_url)]
    assert await _subscribers(client, carol.participant_id) == 2, "one subscription per replica, not per tab"
    await tabs[0][0].close()
    await asyncio.sleep(0.2)
    assert await _subscribers(client, carol.participant_id) == 2, "replica A still holds a tab"
    await tabs[1][0].close()
    await _until(lambda: _is(client, carol.participant_id, 1), "replica A to unsubscribe after its last tab")
    await tabs[2][0].close()
    await _until(lambda: _zero(client, carol.participant_id), "replica B to unsubscribe")


async def _is(client: aioredis.Redis, participant_id: str, count: int) -> bool:
    return await _subscribers(client, participant_id) == count


async def test_sockets_opening_while_their_user_is_published_to_miss_nothing(
    api: ApiServer, http: httpx.AsyncClient, client: aioredis.Redis
) -> None:
    # Each socket is its user's first on the replica, so its subscription is made as it opens,
    # while envelopes keep being published for that user. What it receives must be one unbroken,
    # ordered run of the user's history that includes everything after its hello's head_id
    # (envelopes published while it opened may come too): the history read comes after the
    # subscription is in place, so nothing falls between them.
    users = [await register(http) for _ in range(20)]
    publisher = AsyncEnvelopePublisher(client, history_maxlen=5000, history_ttl_s=3600)
    stop = asyncio.Event()

    async def publish_for(participant_id: str) -> None:
        i = 0
        while not stop.is_set():
            await publisher.publish(participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": str(i)})
            i += 1
            await asyncio.sleep(0.001)

    publishing = [asyncio.create_task(publish_for(user.participant_id)) for user in users]
    await asyncio.sleep(0.05)
    opened = await asyncio.gather(*(open_socket(api.ws_url, user) for user in users))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.gather(*publishing)
    for user, (ws, hello) in zip(users, opened, strict=True):
        head = hello["data"]["head_id"]
        history = [entry_id for entry_id, _ in await client.xrange(history_key(user.participant_id))]
        owed = history[history.index(head) + 1 :] if head else history
        assert owed, "envelopes were published after the socket opened"
        got: list[str] = []
        async with ws:
            while not got or got[-1] != history[-1]:
                frame = await next_frame(ws, what=f"envelope {len(got) + 1} (to {history[-1]})", timeout_s=5)
                if frame["type"] != "ping":
                    got.append(frame["id"])
        start = history.index(got[0])
        assert got == history[start : start + len(got)], "a gap or a duplicate in what the socket received"
        assert set(owed) <= set(got), "an envelope after the hello's head_id never arrived"
