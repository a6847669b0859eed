"""The bus on a three-primary Redis Cluster (BUS_REDIS_CLUSTER): sharded channels, one listener
per primary, a shard lost and back. The rest of the delivery suite runs on it in test_delivery.py."""

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from redis.cluster import RedisCluster
from websockets.asyncio.client import ClientConnection, connect

from app.core.config import Settings
from app.core.security import create_access_token
from app.realtime.envelopes import EnvelopeType, user_channel
from app.realtime.publisher import EnvelopePublisher
from tests.conftest import TEST_JWT_SECRET
from tests.support.client import Account, open_socket, register
from tests.support.redis_cluster import LocalRedisCluster
from tests.support.stack import ApiServer
from tests.support.waiting import frames_until, next_frame, wait_until


@pytest.fixture(scope="module")
def cluster(redis_cluster: LocalRedisCluster) -> Iterator[RedisCluster]:
    client = RedisCluster.from_url(redis_cluster.url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def cluster_http(cluster_api: ApiServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=cluster_api.base_url, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def publisher(cluster: RedisCluster) -> EnvelopePublisher:
    return EnvelopePublisher(cluster, history_maxlen=1000, history_ttl_s=3600)  # type: ignore[arg-type]


def _shard_port(cluster: RedisCluster, participant_id: str) -> int:
    return int(cluster.get_node_from_key(user_channel(participant_id)).port)


def _shard_subscribers(redis_cluster: LocalRedisCluster, port: int, participant_id: str) -> int:
    with redis_cluster.node_client(port) as node:
        _, count = node.execute_command("PUBSUB", "SHARDNUMSUB", user_channel(participant_id))
        return int(count)


def _received(base_url: str) -> float:
    text = httpx.get(f"{base_url}/metrics", timeout=5).text
    line = next(line for line in text.splitlines() if line.startswith("taskwire_bus_messages_received_total "))
    return float(line.split()[1])


def _ready(api: ApiServer) -> int:
    try:
        return httpx.get(f"{api.base_url}/readyz", timeout=2).status_code
    except httpx.HTTPError:
        return 0


async def _users_on_two_shards(http: httpx.AsyncClient, cluster: RedisCluster) -> tuple[Account, Account]:
    first = await register(http)
    while True:
        other = await register(http)
        if _shard_port(cluster, other.participant_id) != _shard_port(cluster, first.participant_id):
            return first, other


async def test_each_user_is_one_shard_subscription_on_their_own_primary_and_no_pattern_anywhere(
    cluster_http: httpx.AsyncClient,
    cluster_api: ApiServer,
    cluster_api_b: ApiServer,
    redis_cluster: LocalRedisCluster,
    cluster: RedisCluster,
) -> None:
    alice, bob = await _users_on_two_shards(cluster_http, cluster)
    ws_a, _ = await open_socket(cluster_api.ws_url, alice)
    ws_b, _ = await open_socket(cluster_api_b.ws_url, alice)
    ws_c, _ = await open_socket(cluster_api.ws_url, bob)
    async with ws_a, ws_b, ws_c:
        for port in redis_cluster.ports:
            with redis_cluster.node_client(port) as node:
                assert node.pubsub_numpat() == 0, f"a pattern subscription on node {port}"
        home = _shard_port(cluster, alice.participant_id)
        assert _shard_subscribers(redis_cluster, home, alice.participant_id) == 2, "one per replica holding a tab"
        assert _shard_subscribers(redis_cluster, _shard_port(cluster, bob.participant_id), bob.participant_id) == 1
    wait_until(
        lambda: _shard_subscribers(redis_cluster, home, alice.participant_id) == 0,
        timeout_s=10,
        what="both replicas to unsubscribe alice after her last tabs",
    )


async def test_a_replica_hears_only_the_users_it_holds_on_the_cluster(
    cluster_http: httpx.AsyncClient,
    cluster_api: ApiServer,
    cluster_api_b: ApiServer,
    cluster: RedisCluster,
    publisher: EnvelopePublisher,
) -> None:
    alice = await register(cluster_http)
    ws, _ = await open_socket(cluster_api.ws_url, alice)
    async with ws:
        before = _received(cluster_api_b.base_url)
        ids = [publisher.publish(alice.participant_id, EnvelopeType.CHAT_DELTA, "t", {"n": i}) for i in range(200)]
        got = [(await next_frame(ws, what=f"envelope {i}"))["id"] for i in range(200)]
        after = _received(cluster_api_b.base_url)
    assert got == ids
    assert after - before < 10, f"replica B received {after - before} messages for a user it does not hold"


async def test_a_shard_killed_and_restarted_loses_nothing_and_the_other_shards_carry_on(
    cluster_http: httpx.AsyncClient,
    cluster_api: ApiServer,
    redis_cluster: LocalRedisCluster,
    cluster: RedisCluster,
    publisher: EnvelopePublisher,
) -> None:
    doomed, spared = await _users_on_two_shards(cluster_http, cluster)
    ws_doomed, _ = await open_socket(cluster_api.ws_url, doomed)
    ws_spared, _ = await open_socket(cluster_api.ws_url, spared)
    async with ws_doomed, ws_spared:
        before = publisher.publish(doomed.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "before"})
        assert (await next_frame(ws_doomed))["id"] == before

        port = _shard_port(cluster, doomed.participant_id)
        redis_cluster.kill_node(port)  # kill -9; its append-only file holds what it acknowledged
        wait_until(lambda: _ready(cluster_api) == 503, timeout_s=20, what="/readyz to report the lost shard")
        # Users of the other shards are not affected.
        during = publisher.publish(spared.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": "during"})
        assert (await next_frame(ws_spared, what="a live envelope while another shard is down"))["id"] == during

        redis_cluster.start_node(port)
        redis_cluster.wait_until_ok()
        wait_until(lambda: _ready(cluster_api) == 200, timeout_s=30, what="/readyz to recover")
        cluster.nodes_manager.initialize()  # the test's own client reconnects too
        after = [
            publisher.publish(doomed.participant_id, EnvelopeType.CHAT_DELTA, "t", {"delta": f"after {i}"})
            for i in range(5)
        ]
        frames = await frames_until(ws_doomed, lambda f: f.get("id") == after[-1], what="the envelopes after")
    assert [f["id"] for f in frames if f["type"] != "hello"] == after, "live again, nothing twice"
    # History survived the restart: a tab that reconnects from `before` gets exactly the rest.
    ws, hello = await open_socket(cluster_api.ws_url, doomed, last_id=before)
    async with ws:
        replayed = [(await next_frame(ws, what=f"replayed {i}"))["id"] for i in range(5)]
    assert hello["data"]["recovered"] is True and replayed == after


async def test_envelopes_published_while_the_shard_listeners_reconnect_still_arrive(
    cluster_http: httpx.AsyncClient,
    cluster_api: ApiServer,
    redis_cluster: LocalRedisCluster,
    publisher: EnvelopePublisher,
) -> None:
    account = await register(cluster_http)
    ws, _ = await open_socket(cluster_api.ws_url, account)
    async with ws:
        for port in redis_cluster.ports:
            with redis_cluster.node_client(port) as node:
                node.client_kill_filter(_type="pubsub")
        in_gap = [publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"n": i}) for i in range(20)]
        deadline = time.monotonic() + 15
        while _ready(cluster_api) != 200 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        after = publisher.publish(account.participant_id, EnvelopeType.CHAT_DELTA, "t", {"n": "after"})
        frames = await frames_until(ws, lambda f: f.get("id") == after, what="every envelope, then the live one")
    assert [f["id"] for f in frames] == [*in_gap, after]


async def test_a_class_opening_its_sockets_at_once_gets_every_hello(cluster_api: ApiServer) -> None:
    # 300 sockets of 300 users at once: more Redis commands in flight than the bus client's
    # connections. redis-py's cluster client fails the extra ones at once (its plain client
    # waits); each of those sockets used to end in an exception, dropped without a close code.
    settings = Settings(jwt_secret=TEST_JWT_SECRET)
    users = [str(uuid.uuid4()) for _ in range(300)]

    async def one(user: str) -> tuple[ClientConnection, dict[str, Any]]:
        token = create_access_token(uuid.UUID(user), settings)
        ws = await connect(f"{cluster_api.ws_url}/ws/user/{user}?token={token}", max_queue=None)
        return ws, await next_frame(ws, timeout_s=30, what="the hello frame")

    opened = await asyncio.gather(*(one(user) for user in users), return_exceptions=True)
    try:
        failures = [repr(result) for result in opened if isinstance(result, BaseException)]
        assert not failures, f"{len(failures)} of 300 sockets failed, e.g. {failures[:3]}"
        assert all(hello["type"] == "hello" for _, hello in opened)  # type: ignore[misc]
    finally:
        await asyncio.gather(
            *(result[0].close() for result in opened if not isinstance(result, BaseException)),
            return_exceptions=True,
        )
