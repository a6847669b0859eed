"""Publishing envelopes: history entry and live message in one atomic Redis step.

`EnvelopePublisher` (sync) is what workers use; `AsyncEnvelopePublisher` serves the API
(a cancellation's `task_status`). Both run the same Lua script.
"""

from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from app.realtime.envelopes import EnvelopeType, encode_body, history_key, user_channel

# One server-side step, so a message is never live without being in history (a resuming
# client would miss it) nor in history without having been published. With a guard, the
# step is refused unless the caller still holds the task's execution lease and the task is
# not cancelled: a stale or cancelled execution can never add to the user's stream.
# The splice of the id into the body is the same as envelopes.attach_id.
_PUBLISH_SCRIPT = """
if KEYS[2] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[5] then return redis.error_reply('TASKWIRE_LEASE_LOST') end
  if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('TASKWIRE_CANCELLED') end
end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
return id
"""


class LeaseLost(Exception):
    """This execution no longer holds the task's lease: another worker has taken the task over."""


class TaskCancelled(Exception):
    """The task was cancelled: stop at this checkpoint and publish nothing more."""


@dataclass(frozen=True)
class PublishGuard:
    """Publish only while `lease_key` holds `token` and `cancel_key` does not exist."""

    lease_key: str
    token: str
    cancel_key: str


def _script_args(
    participant_id: str,
    envelope_type: EnvelopeType,
    task_id: str,
    data: dict[str, object],
    error: dict[str, str] | None,
    guard: PublishGuard | None,
    maxlen: int,
    ttl: int,
) -> tuple[list[str], list[str | int]]:
    body = encode_body(envelope_type, task_id, data, error)
    keys = [history_key(participant_id), guard.lease_key if guard else "", guard.cancel_key if guard else ""]
    return keys, [body, maxlen, ttl, user_channel(participant_id), guard.token if guard else ""]


def _refused(exc: ResponseError) -> Exception:
    text = str(exc)
    if "TASKWIRE_LEASE_LOST" in text:
        return LeaseLost(text)
    if "TASKWIRE_CANCELLED" in text:
        return TaskCancelled(text)
    return exc


class EnvelopePublisher:
    """Appends envelopes to a user's history and publishes them to the user's channel (sync)."""

    def __init__(self, client: redis.Redis, *, history_maxlen: int, history_ttl_s: int):
        self._script = client.register_script(_PUBLISH_SCRIPT)
        self._maxlen = history_maxlen
        self._ttl = history_ttl_s

    def publish(
        self,
        participant_id: str,
        envelope_type: EnvelopeType,
        task_id: str,
        data: dict[str, object],
        error: dict[str, str] | None = None,
        *,
        guard: PublishGuard | None = None,
    ) -> str:
        """Publish one envelope; returns its id. With `guard`, raises LeaseLost or TaskCancelled instead."""
        keys, args = _script_args(participant_id, envelope_type, task_id, data, error, guard, self._maxlen, self._ttl)
        try:
            return str(self._script(keys=keys, args=args))
        except ResponseError as exc:
            raise _refused(exc) from None


class AsyncEnvelopePublisher:
    """The same publisher for the API's event loop."""

    def __init__(self, client: aioredis.Redis, *, history_maxlen: int, history_ttl_s: int):
        self._script = client.register_script(_PUBLISH_SCRIPT)
        self._maxlen = history_maxlen
        self._ttl = history_ttl_s

    async def publish(
        self,
        participant_id: str,
        envelope_type: EnvelopeType,
        task_id: str,
        data: dict[str, object],
        error: dict[str, str] | None = None,
    ) -> str:
        """Publish one envelope; returns its id."""
        keys, args = _script_args(participant_id, envelope_type, task_id, data, error, None, self._maxlen, self._ttl)
        return str(await self._script(keys=keys, args=args))
