"""One Redis connection pool per process, for the async API side and the sync worker side.

Two Redis roles: the Celery broker (REDIS_URL, always a plain Redis) and the bus (BUS_REDIS_URL:
pub/sub, history, leases and the rest), which may be a Redis Cluster. When the bus has no URL
of its own, both roles share one client.
"""

from typing import cast

import redis
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster as AsyncRedisCluster
from redis.cluster import RedisCluster
from redis.driver_info import DriverInfo

from app.core.config import Settings

# redis-py 8 looks its own version up in the installed packages' metadata (a scan of sys.path)
# for every new connection unless told: on the worker's event loop that held every stream up
# to 120 ms while a burst of tasks opened connections. Told once, here.
_CLIENT_VERSION = {"driver_info": DriverInfo(lib_version=redis.__version__)}


def create_async_redis(url: str, *, max_connections: int = 64) -> aioredis.Redis:
    """The API replica's shared client; its pool does not grow with the number of sockets."""
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=5,
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
        cluster = AsyncRedisCluster.from_url(
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


def is_cluster(client: object) -> bool:
    """Whether `client` talks to a Redis Cluster."""
    return isinstance(client, AsyncRedisCluster | RedisCluster)
