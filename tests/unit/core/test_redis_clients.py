"""Our Redis clients: no scan of the installed packages on the event loop; a cluster client
whose commands wait for a free connection."""

import asyncio
from importlib import metadata

import pytest
from redis.exceptions import MaxConnectionsError

from app.core import redis as redis_clients
from app.core.embedded_redis import EmbeddedRedis
from app.core.redis import WaitingRedisCluster, create_async_redis, create_sync_redis


async def test_new_connections_never_look_up_package_metadata(
    redis_server: EmbeddedRedis, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CI caught "event loop blocked" for 118 ms in redis-py's get_lib_version (importlib.metadata).
    lookups: list[str] = []
    original = metadata.version
    monkeypatch.setattr(metadata, "version", lambda name: lookups.append(name) or original(name))
    client = create_async_redis(redis_server.url, max_connections=4)
    try:
        for _ in range(3):
            await client.ping()
        sync = create_sync_redis(redis_server.url, max_connections=2)
        sync.ping()
        sync.close()
    finally:
        await client.aclose()
    assert lookups == []


def _waiting_cluster(max_connections: int) -> WaitingRedisCluster:
    # Nothing connects until a command is sent; turns need no cluster.
    return WaitingRedisCluster(host="127.0.0.1", port=1, max_connections=max_connections)


async def test_a_cluster_command_waits_its_turn_and_fails_clearly_after_the_pool_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(redis_clients, "POOL_WAIT_S", 0.2)
    cluster = _waiting_cluster(max_connections=1)
    held, release = asyncio.Event(), asyncio.Event()

    async def hold_the_only_turn() -> None:
        async with cluster.turn():
            held.set()
            await release.wait()

    holder = asyncio.create_task(hold_the_only_turn())
    await held.wait()
    with pytest.raises(MaxConnectionsError, match="no free Redis connection"):
        async with cluster.turn():
            pass
    waiter = asyncio.create_task(_take_a_turn(cluster))
    await asyncio.sleep(0.05)
    assert not waiter.done(), "waits while the turn is held"
    release.set()
    await asyncio.wait_for(waiter, 1)
    await holder


async def _take_a_turn(cluster: WaitingRedisCluster) -> None:
    async with cluster.turn():
        pass


async def test_a_pipeline_retrying_a_command_inside_its_turn_does_not_wait_for_itself() -> None:
    # redis-py's cluster pipeline re-sends redirected commands through execute_command while
    # its own turn is held: with one turn in all, waiting for another would never end.
    cluster = _waiting_cluster(max_connections=1)
    async with asyncio.timeout(1), cluster.turn(), cluster.turn():
        pass
