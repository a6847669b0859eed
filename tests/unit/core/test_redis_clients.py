"""Our Redis clients open connections without scanning the installed packages on the event loop."""

from importlib import metadata

import pytest

from app.core.embedded_redis import EmbeddedRedis
from app.core.redis import create_async_redis, create_sync_redis


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
