"""Execution leases: at most one worker runs a task at a time, and a dead worker's task can be taken over."""

import redis

from app.realtime.publisher import PublishGuard

# Take the lease only if nobody holds it; the fencing token increases with every taker, so
# the database can refuse a terminal write from an execution that was superseded.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local token = redis.call('INCR', KEYS[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call('SET', KEYS[1], token, 'PX', ARGV[1])
return token
"""
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
_FENCE_TTL_S = 7 * 24 * 3600


def lease_key(task_id: str) -> str:
    """The Redis key whose value is the token of the execution that owns the task."""
    return f"task:lease:{task_id}"


def cancel_key(task_id: str) -> str:
    """The Redis key that marks a task as cancelled for its running execution."""
    return f"task:cancelled:{task_id}"


class TaskLease:
    """One execution's claim on a task, renewed while it runs."""

    def __init__(self, client: redis.Redis, task_id: str, *, ttl_s: float):
        self._client = client
        self.task_id = task_id
        self._ttl_ms = int(ttl_s * 1000)
        self.token: int | None = None

    def acquire(self) -> int | None:
        """Take the lease; returns the fencing token, or None while another execution holds it."""
        token = self._client.eval(
            _ACQUIRE, 2, lease_key(self.task_id), f"task:fence:{self.task_id}", self._ttl_ms, _FENCE_TTL_S
        )
        self.token = int(token) if token is not None else None
        return self.token

    def renew(self) -> bool:
        """Extend the lease; False when it has been lost (expired and taken by someone else)."""
        return self.token is not None and bool(
            self._client.eval(_RENEW, 1, lease_key(self.task_id), self.token, self._ttl_ms)
        )

    def release(self) -> None:
        """Give the lease up, if it is still ours."""
        if self.token is not None:
            self._client.eval(_RELEASE, 1, lease_key(self.task_id), self.token)

    @property
    def guard(self) -> PublishGuard:
        """The publish guard that holds only while this lease does and the task is not cancelled."""
        assert self.token is not None, "acquire the lease first"
        return PublishGuard(lease_key(self.task_id), str(self.token), cancel_key(self.task_id))
