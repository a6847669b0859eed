"""Publishing envelopes: history entry and live message in one atomic Redis step.

`AsyncEnvelopePublisher` serves workers and the API, batching what one turn of the event loop
publishes; `EnvelopePublisher` (sync) is the write-only publisher for outside processes, tests
and benchmarks. Both run the same Lua script.
"""

import asyncio
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from redis.exceptions import NoScriptError, ResponseError

from app.core.redis import is_cluster
from app.realtime.envelopes import EnvelopeType, encode_body, history_key, user_channel

# One server-side step, so a message is never live without being in history (a resuming
# client would miss it) nor in history without having been published. With a guard, the step
# is refused unless `owner_key` still holds the caller's token and `stop_key` does not exist.
# With an id (ARGV[6]) the entry gets exactly that id when it is newer than the stream's
# newest, and the next free one otherwise: a caller can record an id before publishing and see
# whether it held. If that id already holds this very envelope, an earlier try went through
# (its reply was lost): the publish is done, not repeated. The splice of the id into the body
# is the same as envelopes.attach_id. ARGV[7] is PUBLISH, or SPUBLISH on a Redis Cluster: every
# key and the channel carry the user's hash tag, so the whole step runs on the user's shard.
_PUBLISH_SCRIPT = """
if #KEYS > 1 then
  if redis.call('GET', KEYS[2]) ~= ARGV[5] then return redis.error_reply('TASKWIRE_GUARD_OWNER') end
  if redis.call('EXISTS', KEYS[3]) == 1 then return redis.error_reply('TASKWIRE_GUARD_STOPPED') end
end
local id
if ARGV[6] ~= '' then
  local same = redis.call('XRANGE', KEYS[1], ARGV[6], ARGV[6])
  if #same > 0 and same[1][2][2] == ARGV[1] then return ARGV[6] end
  local added = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], ARGV[6], 'e', ARGV[1])
  if type(added) == 'string' then id = added end
end
if not id then id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', 'e', ARGV[1]) end
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call(ARGV[7], ARGV[4], '{"id":"' .. id .. '",' .. string.sub(ARGV[1], 2))
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
    publish_command: str,
    timestamp: str | None = None,
) -> tuple[list[str], list[str | int]]:
    body = encode_body(envelope_type, task_id, data, error, timestamp=timestamp)
    # Only keys that exist go in KEYS: on a cluster, every one of them must be in the user's slot.
    keys = [history_key(participant_id), guard.owner_key, guard.stop_key] if guard else [history_key(participant_id)]
    args: list[str | int] = [body, maxlen, ttl, user_channel(participant_id), guard.token if guard else ""]
    args += [envelope_id or "", publish_command]
    return keys, args


def publish_command(client: object) -> str:
    """PUBLISH, or SPUBLISH (sharded pub/sub) when `client` talks to a Redis Cluster."""
    return "SPUBLISH" if is_cluster(client) else "PUBLISH"


def _refused(exc: ResponseError) -> Exception:
    text = str(exc)
    if "TASKWIRE_GUARD_OWNER" in text:
        return PublishRefused("owner")
    if "TASKWIRE_GUARD_STOPPED" in text:
        return PublishRefused("stopped")
    return exc


@dataclass(frozen=True)
class Outgoing:
    """One envelope for `AsyncEnvelopePublisher.publish_many` (the fields are `publish`'s arguments)."""

    participant_id: str
    envelope_type: EnvelopeType
    task_id: str
    data: dict[str, object]
    error: dict[str, str] | None = None
    guard: PublishGuard | None = None
    envelope_id: str | None = None
    also: Callable[[Pipeline], object] | None = None
    # Fixed when the same envelope may be published again: the repeat is then byte-identical.
    timestamp: str | None = None


@dataclass
class _Pending:
    """One publish waiting for its batch."""

    keys: list[str]
    args: list[str | int]
    also: Callable[[Pipeline], object] | None
    reply: "asyncio.Future[str]"


class AsyncEnvelopePublisher:
    """Appends envelopes to a user's history and publishes them to the user's channel.

    Publishes issued in the same turn of the event loop, by any number of tasks, go to Redis in
    one pipeline: a worker streaming hundreds of answers sends one batch per turn instead of a
    round trip per envelope, at a quarter of the CPU per envelope (docs/scaling.md). Each caller
    still gets its own envelope's id or refusal.
    """

    def __init__(self, client: aioredis.Redis, *, history_maxlen: int, history_ttl_s: int):
        self._client = client
        self._command = publish_command(client)
        self._maxlen = history_maxlen
        self._ttl = history_ttl_s
        self._batch: list[_Pending] = []
        self._sending: set[asyncio.Task[None]] = set()

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
        return await self.send(Outgoing(participant_id, envelope_type, task_id, data, error, guard, envelope_id, also))

    async def send(self, outgoing: Outgoing) -> str:
        """Publish one envelope given whole; its id, or what it met instead (raised)."""
        return await self._enqueue(outgoing)

    async def publish_many(self, envelopes: Sequence[Outgoing]) -> list[str | BaseException]:
        """Publish these envelopes in this order, in one batch: each one's id, or what it met instead."""
        replies = [self._enqueue(outgoing) for outgoing in envelopes]
        return list(await asyncio.gather(*replies, return_exceptions=True))

    def _enqueue(self, outgoing: Outgoing) -> "asyncio.Future[str]":
        keys, args = _script_args(
            outgoing.participant_id,
            outgoing.envelope_type,
            outgoing.task_id,
            outgoing.data,
            outgoing.error,
            outgoing.guard,
            outgoing.envelope_id,
            self._maxlen,
            self._ttl,
            self._command,
            outgoing.timestamp,
        )
        loop = asyncio.get_running_loop()
        pending = _Pending(keys, args, outgoing.also, loop.create_future())
        self._batch.append(pending)
        if len(self._batch) == 1:
            loop.call_soon(self._send_batch)
        return pending.reply

    def _send_batch(self) -> None:
        batch, self._batch = self._batch, []
        sending = asyncio.ensure_future(self._send(batch))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            replies = await self._execute(batch, with_also=True)
            lost = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if lost:
                # Redis lost its scripts (a restart): load it and publish those again, without `also`.
                await self._client.script_load(_PUBLISH_SCRIPT)
                again = await self._execute([batch[i] for i in lost], with_also=False)
                for i, reply in zip(lost, again, strict=True):
                    replies[i] = reply
        except Exception as exc:  # the connection failed: every caller of the batch hears it
            for pending in batch:
                if not pending.reply.done():
                    pending.reply.set_exception(exc)
            return
        for pending, reply in zip(batch, replies, strict=True):
            if pending.reply.done():  # the caller gave up waiting
                continue
            if isinstance(reply, ResponseError):
                pending.reply.set_exception(_refused(reply))
            elif isinstance(reply, Exception):
                pending.reply.set_exception(reply)
            else:
                pending.reply.set_result(str(reply))

    async def _execute(self, batch: list[_Pending], *, with_also: bool) -> list[Any]:
        """Run the batch in one pipeline; returns each publish's reply, in the batch's order."""
        async with self._client.pipeline(transaction=False) as pipe:
            positions = []
            for pending in batch:
                positions.append(len(pipe))
                # execute_command: redis-py's cluster pipeline refuses its `evalsha` method (all
                # keys share the user's slot, which is all a cluster needs), not the command.
                pipe.execute_command("EVALSHA", _SHA, len(pending.keys), *pending.keys, *pending.args)
                if with_also and pending.also is not None:
                    pending.also(pipe)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        return [replies[position] for position in positions]


class EnvelopePublisher:
    """The same publisher, blocking, for processes without an event loop (and tests)."""

    def __init__(self, client: redis.Redis, *, history_maxlen: int, history_ttl_s: int):
        self._script = client.register_script(_PUBLISH_SCRIPT)
        self._command = publish_command(client)
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
        timestamp: str | None = None,
    ) -> str:
        """Publish one envelope; returns its id. With `guard`, raises PublishRefused when it does not hold."""
        keys, args = _script_args(
            participant_id,
            envelope_type,
            task_id,
            data,
            error,
            guard,
            envelope_id,
            self._maxlen,
            self._ttl,
            self._command,
            timestamp,
        )
        try:
            return str(self._script(keys=keys, args=args))
        except ResponseError as exc:
            raise _refused(exc) from None
