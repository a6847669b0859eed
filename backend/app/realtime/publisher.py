"""Publishing envelopes: history entry and live message in one atomic Redis step.

`AsyncEnvelopePublisher` serves workers and the API; `EnvelopePublisher` (sync) is the
write-only publisher for outside processes, tests and benchmarks. Both run the same Lua script.
"""

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

from app.realtime.envelopes import EnvelopeType, encode_body, history_key, user_channel

# One server-side step, so a message is never live without being in history (a resuming
# client would miss it) nor in history without having been published. With a guard, the step
# is refused unless `owner_key` still holds the caller's token and `stop_key` does not exist.
# With an id (ARGV[6]) the entry gets exactly that id when it is newer than the stream's
# newest, and the next free one otherwise: a caller can record an id before publishing and see
# whether it held. The splice of the id into the body is the same as envelopes.attach_id.
_PUBLISH_SCRIPT = """
if KEYS[2] ~= '' then
  if redis.call('GET', KEYS[2]) ~= ARGV[5] then return redis.error_reply('TASKWIRE_GUARD_OWNER') end
  if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('TASKWIRE_GUARD_STOPPED') end
end
local id
if ARGV[6] ~= '' then
  local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[6], 'e', ARGV[1])
  if type(added) == 'string' then id = added end
end
if not id then id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
return id
"""
_SHA = hashlib.sha1(_PUBLISH_SCRIPT.encode(), usedforsecurity=False).hexdigest()


class PublishRefused(Exception):
    """The guard refused the envelope: `reason` is "owner" (the token changed) or "stopped"."""

    def __init__(self, reason: str):
        super().__init__(f"publish refused: {reason}")
        self.reason = reason


@dataclass(frozen=True)
class PublishGuard:
    """Publish only while `owner_key` holds `token` and `stop_key` does not exist."""

    owner_key: str
    token: str
    stop_key: str


def _script_args(
    participant_id: str,
    envelope_type: EnvelopeType,
    task_id: str,
    data: dict[str, object],
    error: dict[str, str] | None,
    guard: PublishGuard | None,
    envelope_id: str | None,
    maxlen: int,
    ttl: int,
) -> tuple[list[str], list[str | int]]:
    body = encode_body(envelope_type, task_id, data, error)
    keys = [history_key(participant_id), guard.owner_key if guard else "", guard.stop_key if guard else ""]
    args: list[str | int] = [body, maxlen, ttl, user_channel(participant_id), guard.token if guard else ""]
    args.append(envelope_id or "")
    return keys, args


def _refused(exc: ResponseError) -> Exception:
    text = str(exc)
    if "TASKWIRE_GUARD_OWNER" in text:
        return PublishRefused("owner")
    if "TASKWIRE_GUARD_STOPPED" in text:
        return PublishRefused("stopped")
    return exc


class AsyncEnvelopePublisher:
    """Appends envelopes to a user's history and publishes them to the user's channel."""

    def __init__(self, client: aioredis.Redis, *, history_maxlen: int, history_ttl_s: int):
        self._client = client
        self._maxlen = history_maxlen
        self._ttl = history_ttl_s

    async def publish(
        self,
        participant_id: str,
        envelope_type: EnvelopeType,
        task_id: str,
        data: dict[str, object],
        error: dict[str, str] | None = None,
        *,
        guard: PublishGuard | None = None,
        envelope_id: str | None = None,
        also: Callable[[Pipeline], object] | None = None,
    ) -> str:
        """Publish one envelope and return its id; raises PublishRefused when `guard` does not hold.

        `envelope_id` asks for that id (see the script). `also` adds commands of the caller's
        to the same round trip; they run whether or not the guard holds.
        """
        keys, args = _script_args(
            participant_id, envelope_type, task_id, data, error, guard, envelope_id, self._maxlen, self._ttl
        )
        if also is not None:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.evalsha(_SHA, 3, *keys, *args)
                also(pipe)
                reply = (await pipe.execute(raise_on_error=False))[0]
            if not isinstance(reply, NoScriptError):
                if isinstance(reply, ResponseError):
                    raise _refused(reply)
                if isinstance(reply, Exception):
                    raise reply
                return str(reply)
            # Redis lost its scripts (a restart): load it and publish again, without `also`.
        try:
            return str(await self._client.evalsha(_SHA, 3, *keys, *args))
        except NoScriptError:
            await self._client.script_load(_PUBLISH_SCRIPT)
            try:
                return str(await self._client.evalsha(_SHA, 3, *keys, *args))
            except ResponseError as exc:
                raise _refused(exc) from None
        except ResponseError as exc:
            raise _refused(exc) from None


class EnvelopePublisher:
    """The same publisher, blocking, for processes without an event loop (and tests)."""

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
        envelope_id: str | None = None,
    ) -> str:
        """Publish one envelope; returns its id. With `guard`, raises PublishRefused when it does not hold."""
        keys, args = _script_args(
            participant_id, envelope_type, task_id, data, error, guard, envelope_id, self._maxlen, self._ttl
        )
        try:
            return str(self._script(keys=keys, args=args))
        except ResponseError as exc:
            raise _refused(exc) from None
