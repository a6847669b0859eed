"""One Redis connection pool per process, for the async API side and the sync worker side.

Two Redis roles: the Celery broker (REDIS_URL, always a plain Redis) and the bus (BUS_REDIS_URL:
pub/sub, history, leases and the rest), which may be a Redis Cluster. When the bus has no URL
of its own, both roles share one client.
"""

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextvars import ContextVar
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterPipeline
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.driver_info import DriverInfo
from redis.exceptions import MaxConnectionsError, RedisClusterException

from app.core.config import Settings

# redis-py 8 looks its own version up in the installed packages' metadata (a scan of sys.path)
# for every new connection unless told: on the worker's event loop that held every stream up
# to 120 ms while a burst of tasks opened connections. Told once, here.
_CLIENT_VERSION = {"driver_info": DriverInfo(lib_version=redis.__version__)}


# How long a command waits for a free connection before it fails, as the plain pools' `timeout`.
POOL_WAIT_S = 5.0


def create_async_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """The API replica's shared client; its pool does not grow with the number of sockets."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=POOL_WAIT_S,
        decode_responses=True,
        health_check_interval=30,
        **_CLIENT_VERSION,
    )
    return aioredis.Redis(connection_pool=pool)


def create_sync_redis(url: str, *, max_connections: int = 8) -> redis.Redis:
    """A worker process's shared client (one task runs at a time per process, so few connections)."""
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
        decode_responses=True,
        health_check_interval=30,
        **_CLIENT_VERSION,
    )
    return redis.Redis(connection_pool=pool)


def create_async_bus_redis(settings: Settings, broker: aioredis.Redis, *, max_connections: int = 64) -> aioredis.Redis:
    """The bus client: `broker` itself when the bus has no Redis of its own, else a client for
    BUS_REDIS_URL (a cluster client with BUS_REDIS_CLUSTER)."""
    if not settings.bus_redis_url:
        return broker
    if settings.bus_redis_cluster:
        cluster = WaitingRedisCluster.from_url(
            settings.bus_redis_url, max_connections=max_connections, decode_responses=True, **_CLIENT_VERSION
        )
        # The commands Taskwire sends exist on both clients with the same signatures; the bus
        # code is typed against the plain client and reads `is_cluster` where they differ.
        return cast(aioredis.Redis, cluster)
    return create_async_redis(settings.bus_redis_url, max_connections=max_connections)


def create_sync_bus_redis(settings: Settings, broker: redis.Redis, *, max_connections: int = 8) -> redis.Redis:
    """The same, blocking, for the worker's reconciler thread."""
    if not settings.bus_redis_url:
        return broker
    if settings.bus_redis_cluster:
        cluster = RedisCluster.from_url(
            settings.bus_redis_url, max_connections=max_connections, decode_responses=True, **_CLIENT_VERSION
        )
        return cast(redis.Redis, cluster)
    return create_sync_redis(settings.bus_redis_url, max_connections=max_connections)


_holding_a_turn: ContextVar[bool] = ContextVar("holding_a_turn", default=False)


class WaitingRedisCluster(AsyncRedisCluster):
    """redis-py's async cluster client, except that a command waits for a free connection.

    The cluster client fails a command at once (MaxConnectionsError) when all of a node's
    `max_connections` are in use, where the plain client's blocking pool waits: a class opening
    their sockets together made some of them fail. Here at most `max_connections` commands and
    pipelines are in flight in all, so no node is ever asked for more connections than that;
    the others wait their turn, for up to POOL_WAIT_S.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turns = asyncio.Semaphore(self.connection_kwargs["max_connections"])

    @contextlib.asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the in-flight places (once per task: a pipeline retrying a redirected
        command through `execute_command` already holds one)."""
        if _holding_a_turn.get():
            yield
            return
        if not self._turns.locked():
            await self._turns.acquire()  # a free place is taken without waiting: no timer (~6 µs) per command
        else:
            try:
                async with asyncio.timeout(POOL_WAIT_S):
                    await self._turns.acquire()
            except TimeoutError:  # as the blocking pool: a Redis connection error, which callers handle
                raise MaxConnectionsError(f"no free Redis connection within {POOL_WAIT_S:.0f} s") from None
        token = _holding_a_turn.set(True)
        try:
            yield
        finally:
            _holding_a_turn.reset(token)
            self._turns.release()

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        async with self.turn():
            return await super().execute_command(*args, **kwargs)

    def pipeline(self, transaction: Any | None = None, shard_hint: Any | None = None) -> ClusterPipeline:
        if shard_hint:  # as upstream's pipeline()
            raise RedisClusterException("shard_hint is deprecated in cluster mode")
        return _WaitingClusterPipeline(self, transaction)  # type: ignore[abstract]  # (as upstream's)


class _WaitingClusterPipeline(ClusterPipeline):
    async def execute(self, raise_on_error: bool = True, allow_redirections: bool = True) -> list[Any]:
        client = cast(WaitingRedisCluster, self.cluster_client)
        async with client.turn():
            return await super().execute(raise_on_error, allow_redirections)


def is_cluster(client: object) -> bool:
    """Whether `client` talks to a Redis Cluster."""
    return isinstance(client, AsyncRedisCluster | RedisCluster)
