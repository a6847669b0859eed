"""Execution leases: at most one worker runs a task at a time, and a dead worker's task can be taken over."""

import asyncio
import uuid
from enum import StrEnum

import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline

from app.realtime.publisher import PublishGuard
from app.tasks.keys import DISPATCHED_KEY, METRICS_KEY, cancel_key, fence_key, lease_key

# A worker's first step with a task: the lease, taken only if nobody holds it, with a fencing
# token that increases with every taker so the database can refuse a superseded execution.
_TAKE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FENCE_TTL_S = 7 * 24 * 3600


class LeaseState(StrEnum):
    """What a renewal found."""

    HELD = "held"
    LOST = "lost"  # expired and taken by another execution
    CANCELLED = "cancelled"  # still ours, but the task was cancelled


class Leases:
    """Execution leases with fencing tokens, for one worker process's event loop.

    Leases live in the bus Redis beside the user's history (the publish guard reads them);
    the record of dispatched messages lives in the broker's.
    """

    def __init__(self, client: aioredis.Redis, broker: aioredis.Redis, *, ttl_s: float):
        self._client = client
        self._broker = broker
        self._ttl_ms = int(ttl_s * 1000)
        self._take = client.register_script(_TAKE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    async def take(self, participant_id: str, task_id: uuid.UUID) -> int | None:
        """Mark the task's message picked up and take its lease: the fencing token, or None while it runs elsewhere.

        The broker no longer holds the message, whatever happens next: one dropped here while
        the task is still QUEUED is the reconciler's to send again.
        """
        keys = [lease_key(participant_id, task_id), fence_key(participant_id, task_id)]
        # Two Redis roles, one wait: the broker's record and the lease do not depend on each other.
        _, token = await asyncio.gather(
            self._broker.zrem(DISPATCHED_KEY, str(task_id)), self._take(keys=keys, args=[self._ttl_ms, _FENCE_TTL_S])
        )
        if token is None:
            await self._client.hincrby(METRICS_KEY, "duplicate_deliveries:running", 1)
            return None
        return int(token)

    async def renew(self, participant_id: str, task_id: uuid.UUID, token: int) -> LeaseState:
        """Extend the lease, and say whether it is still ours and the task still wanted."""
        keys = [lease_key(participant_id, task_id), cancel_key(participant_id, task_id)]
        held = int(await self._renew(keys=keys, args=[token, self._ttl_ms]))
        return LeaseState.HELD if held > 0 else LeaseState.CANCELLED if held < 0 else LeaseState.LOST

    async def release(self, participant_id: str, task_id: uuid.UUID, token: int) -> None:
        """Give the lease up, if it is still ours."""
        await self._release(keys=[lease_key(participant_id, task_id)], args=[token])

    def release_in(self, pipe: Pipeline, participant_id: str, task_id: uuid.UUID, token: int) -> None:
        """The same, as one more command of a pipeline.

        A pipeline cannot load a script on the way: should Redis have lost it (a restart),
        this one command fails and the lease simply expires after its TTL.
        """
        # execute_command: redis-py's cluster pipeline refuses its `evalsha` method, not the command.
        pipe.execute_command("EVALSHA", self._release.sha, 1, lease_key(participant_id, task_id), token)

    async def load(self) -> None:
        """Load the scripts into Redis ahead of the first pipeline that needs one."""
        for script in (self._take, self._renew, self._release):
            await self._client.script_load(script.script)

    @staticmethod
    def guard(participant_id: str, task_id: uuid.UUID, token: int) -> PublishGuard:
        """The publish guard that holds only while this token owns the lease and the task is not cancelled."""
        return PublishGuard(lease_key(participant_id, task_id), str(token), cancel_key(participant_id, task_id))
