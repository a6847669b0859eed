"""One Redis connection pool per process, for the async API side and the sync worker side."""

import redis
import redis.asyncio as aioredis
from redis.driver_info import DriverInfo

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
