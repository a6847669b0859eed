"""Rate limits kept in Redis, so every API replica counts against the same budget."""

import asyncio
import logging
import math
import re

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.core.errors import AppError, ServiceUnavailable

logger = logging.getLogger(__name__)

# One fixed window per key: count this request, start the window on the first one, and
# report how long the window has left.
_HIT = """
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}
"""
_REDIS_TIMEOUT_S = 1.0
_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


class RateLimited(AppError):
    status_code = 429
    code = "rate_limited"


class LimiterUnavailable(ServiceUnavailable):
    code = "rate_limiter_unavailable"


def parse_limit(spec: str) -> tuple[int, int]:
    """`"20/60"` → (20 requests, per 60 seconds)."""
    match = _SPEC.match(spec)
    if not match or int(match.group(1)) < 1 or int(match.group(2)) < 1:
        raise ValueError(f"a rate limit looks like 20/60 (requests/seconds), not {spec!r}")
    return int(match.group(1)), int(match.group(2))


class RateLimiter:
    """Counts requests per key in Redis; raises RateLimited with Retry-After past the limit."""

    def __init__(self, client: aioredis.Redis):
        self._hit = client.register_script(_HIT)

    async def check(self, scope: str, identity: str, spec: str) -> None:
        """Count one request of `identity` in `scope`; 429 once over `spec`.

        When Redis does not answer in time the request is refused (503 `rate_limiter_unavailable`):
        these limits guard sign-in against guessing, and a limit that lets requests through
        whenever Redis is slow is no limit under the very load it exists for.
        """
        limit, window_s = parse_limit(spec)
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                count, ttl_ms = await self._hit(keys=[f"ratelimit:{scope}:{identity}"], args=[window_s * 1000])
        except (RedisError, TimeoutError):
            logger.warning("rate limiter unavailable; refusing the request", extra={"scope": scope})
            raise LimiterUnavailable(
                "this is unavailable for a moment; please try again in a few seconds", headers={"Retry-After": "2"}
            ) from None
        raise_if_over(int(count), int(ttl_ms), limit, window_s)


def raise_if_over(count: int, ttl_ms: int, limit: int, window_s: int) -> None:
    """429 with Retry-After (the window's remaining time) when `count` in the window is over `limit`."""
    if count > limit:
        retry_after = max(1, math.ceil(ttl_ms / 1000))
        raise RateLimited(
            f"too many requests: at most {limit} every {window_s} s; try again in {retry_after} s",
            headers={"Retry-After": str(retry_after)},
        )
