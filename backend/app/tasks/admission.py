"""Admitting a submit: the user's rate limit and the queue's backlog, decided in one Redis round trip.

Past capacity a queue only grows, and every task in it waits longer: shedding at the door
(503 `overloaded`) keeps the wait of the tasks already accepted bounded, and the learner is
told at once instead of watching a spinner for minutes. Nothing is written for a refused submit.
"""

import asyncio
import logging

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from app.core.errors import ServiceUnavailable
from app.core.rate_limit import parse_limit, raise_if_over
from app.metrics.registry import submits_shed
from app.tasks.dispatch import RETRY_AFTER_S, queue_unavailable
from app.tasks.registry import TaskRegistry

# The queue first: a shed submit does not use up the user's budget. Celery's Redis transport
# keeps a queue's waiting messages in a list of the queue's name; what workers hold is not in it.
_ADMIT = """
local max_backlog = tonumber(ARGV[2])
local backlog = redis.call('LLEN', KEYS[2])
if max_backlog > 0 and backlog >= max_backlog then return {0, 0} end
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {count, redis.call('PTTL', KEYS[1])}
"""
_REDIS_TIMEOUT_S = 0.5
logger = logging.getLogger(__name__)


class Overloaded(ServiceUnavailable):
    code = "overloaded"


class SubmitAdmission:
    """Refuses a submit over SUBMIT_RATE_LIMIT (429) or while its queue is full (503 `overloaded`)."""

    def __init__(self, client: aioredis.Redis, registry: TaskRegistry, *, rate_limit: str, max_backlog: int):
        self._admit = client.register_script(_ADMIT)
        self._registry = registry
        self._limit, self._window_s = parse_limit(rate_limit)
        self._max_backlog = max_backlog

    async def admit(self, participant_id: str, kind: str) -> None:
        """Count one submit of `kind` by the participant, or raise why it is refused.

        The count lives in the broker's Redis: if that does not answer, the task could not be
        enqueued either, so the submit is refused (503 `queue_unavailable`) before anything is written.
        """
        keys = [f"ratelimit:submit:{participant_id}", self._registry[kind].queue]
        try:
            async with asyncio.timeout(_REDIS_TIMEOUT_S):
                count, ttl_ms = await self._admit(keys=keys, args=[self._window_s * 1000, self._max_backlog])
        except (RedisError, TimeoutError) as exc:
            # Said once per refusal: a 503 nobody can trace in the log is an outage nobody sees.
            logger.warning(
                "submit refused: the broker's Redis did not answer admission",
                extra={"kind": kind, "error": type(exc).__name__},
            )
            raise queue_unavailable() from None
        if int(count) == 0:
            submits_shed.labels(kind=kind).inc()
            raise Overloaded(
                "Taskwire is busy right now; please try again in a few seconds",
                headers={"Retry-After": RETRY_AFTER_S},
            )
        raise_if_over(int(count), int(ttl_ms), self._limit, self._window_s)
