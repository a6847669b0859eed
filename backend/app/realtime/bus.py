"""The one Redis pub/sub listener per API replica: the channels of the users it holds → ConnectionManager."""

import asyncio
import logging
import random
import time
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis
from redis.crc import key_slot

from app.core.cancellation import cancel_and_wait
from app.metrics import registry as metrics
from app.realtime.envelopes import is_stream_id, participant_from_channel, user_channel
from app.realtime.manager import ConnectionManager

# Channels per SUBSCRIBE / UNSUBSCRIBE command: a reconnect re-subscribes every user held in a
# few commands, none of them large enough to stall Redis.
SUBSCRIBE_BATCH = 1000

logger = logging.getLogger(__name__)


class DeafListener(Exception):
    """The subscription looks connected but stopped receiving even our own canary."""


class BusListener:
    """Receives the live envelopes of the users this replica holds and hands them to the local
    manager; survives Redis blips.

    It subscribes to a user's channel while the user has a socket here (the manager's
    `Subscriptions` say which), in batches, so a replica hears only its own users' envelopes.
    A canary message is published on the listener's own channel every `canary_interval_s`
    through the shared pool (another connection): if the listener stops hearing it, the
    subscription is deaf and is rebuilt. After every re-subscription, sockets catch up from
    history on what they may have missed.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        manager: ConnectionManager,
        *,
        max_backoff_s: float = 5.0,
        canary_interval_s: float = 5.0,
        shard: int = 0,
        sharded: bool = False,
        canary_channel: str | None = None,
    ):
        """`client` reaches the Redis that carries the shard's channels; with `sharded` (one
        primary of a Redis Cluster) the listener uses SSUBSCRIBE and SPUBLISH, and
        `canary_channel` must be a channel whose slot that primary owns."""
        self._client = client
        self._manager = manager
        self._max_backoff_s = max_backoff_s
        self._canary_interval_s = canary_interval_s
        self._shard = shard
        self._sharded = sharded
        self._canary_channel = canary_channel or user_channel(f"__canary__:{uuid.uuid4().hex}")
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.last_canary_heard_at = 0.0

    async def run(self) -> None:
        """Listen until cancelled, reconnecting with capped exponential backoff."""
        backoff = 0.1
        subscribed_before = False
        while True:
            try:
                await self._listen_once(after_outage=subscribed_before)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.connected.is_set():
                    backoff = 0.1  # it was healthy until now: retry quickly first
                self.connected.clear()
                self._manager.subscriptions.reset(self._shard)
                subscribed_before = subscribed_before or self.last_canary_heard_at > 0
                self.reconnects += 1
                metrics.bus_reconnects.inc()
                delay = min(backoff, self._max_backoff_s) * (0.5 + random.random() / 2)
                logger.warning("bus listener lost Redis, retrying", extra={"error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _listen_once(self, *, after_outage: bool) -> None:
        subscriptions = self._manager.subscriptions
        async with self._client.pubsub() as pubsub:
            await self._subscribe(pubsub, [self._canary_channel])
            # run() reset the shard when the last connection was lost: everything wanted is sent again.
            subscriptions.set_listening(self._shard, True)
            sender = asyncio.create_task(self._send_subscriptions(pubsub), name="bus-subscriptions")
            try:
                await self._wait_for_canary(pubsub, sender)
                self.connected.set()
                logger.info(
                    "bus listener subscribed",
                    extra={"shard": self._shard, "users": subscriptions.wanted_in(self._shard)},
                )
                if after_outage:
                    # Hold every greeted socket of the shard now, before any new live message is
                    # dispatched, so the history read that follows cannot miss one. Sockets still
                    # opening see the lost subscription themselves (`Subscriptions.epoch_of`).
                    mine = subscriptions.shard_of
                    self._manager.catch_up_later(
                        [c for c in self._manager.connections() if c.greeted and mine(c.participant_id) == self._shard]
                    )
                next_canary = time.monotonic() + self._canary_interval_s
                while True:
                    await self._receive(pubsub, sender, timeout_s=min(1.0, self._canary_interval_s))
                    now = time.monotonic()
                    if now >= next_canary:
                        if now - self.last_canary_heard_at > 3 * self._canary_interval_s:
                            raise DeafListener("no canary heard for three intervals")
                        await self._publish_canary()
                        next_canary = now + self._canary_interval_s
            finally:
                await _stop(sender)

    async def _send_subscriptions(self, pubsub: aioredis.client.PubSub) -> None:
        # Sockets that open in one turn of the loop share a command; so do those that open
        # while the previous command is being written.
        subscriptions = self._manager.subscriptions
        changed = subscriptions.changed(self._shard)
        while True:
            await changed.wait()
            await asyncio.sleep(0)
            subscribe, unsubscribe = subscriptions.to_send(self._shard)
            await self._subscribe(pubsub, [user_channel(p) for p in subscribe])
            await self._unsubscribe(pubsub, [user_channel(p) for p in unsubscribe])

    async def _subscribe(self, pubsub: aioredis.client.PubSub, channels: list[str]) -> None:
        for batch in self._batches(channels):
            await (pubsub.ssubscribe(*batch) if self._sharded else pubsub.subscribe(*batch))

    async def _unsubscribe(self, pubsub: aioredis.client.PubSub, channels: list[str]) -> None:
        for batch in self._batches(channels):
            await (pubsub.sunsubscribe(*batch) if self._sharded else pubsub.unsubscribe(*batch))

    def _batches(self, channels: list[str]) -> list[list[str]]:
        # One command per SUBSCRIBE_BATCH channels; SSUBSCRIBE takes channels of one slot only
        # (each user has a slot of their own, so that is mostly one channel per command).
        if not self._sharded:
            return [channels[start : start + SUBSCRIBE_BATCH] for start in range(0, len(channels), SUBSCRIBE_BATCH)]
        by_slot: dict[int, list[str]] = {}
        for channel in channels:
            by_slot.setdefault(key_slot(channel.encode()), []).append(channel)
        return list(by_slot.values())

    async def _publish_canary(self) -> None:
        if self._sharded:
            await self._client.spublish(self._canary_channel, "canary")
        else:
            await self._client.publish(self._canary_channel, "canary")

    async def _receive(self, pubsub: aioredis.client.PubSub, sender: "asyncio.Task[None]", *, timeout_s: float) -> None:
        """Handle the next message, if one comes within the timeout."""
        if sender.done():
            sender.result()  # the subscription commands failed: raise it, so the listener reconnects
        message = await pubsub.get_message(timeout=timeout_s)
        if message is None:
            return
        kind, channel = message.get("type"), message.get("channel")
        if kind in ("message", "smessage"):
            self.dispatch(channel, message.get("data"))
        elif kind in ("subscribe", "ssubscribe") and isinstance(channel, str) and channel != self._canary_channel:
            participant_id = participant_from_channel(channel)
            if participant_id is not None:
                self._manager.subscriptions.confirmed(participant_id)

    async def _wait_for_canary(self, pubsub: aioredis.client.PubSub, sender: "asyncio.Task[None]") -> None:
        # Ready means messages really flow: publish a canary and hear it before saying so.
        sent_at = time.monotonic()
        await self._publish_canary()
        async with asyncio.timeout(3 * self._canary_interval_s):
            while self.last_canary_heard_at < sent_at:
                await self._receive(pubsub, sender, timeout_s=1.0)

    def dispatch(self, channel: object, data: object) -> None:
        """Route one pub/sub message; a malformed one is logged and skipped, never raised."""
        metrics.bus_received.inc()
        if channel == self._canary_channel:
            self.last_canary_heard_at = time.monotonic()
            return
        participant_id = participant_from_channel(channel) if isinstance(channel, str) else None
        if participant_id is not None and not self._manager.holds(participant_id):
            return  # the user's last socket here just closed; the unsubscribe is on its way
        envelope_id = None
        if participant_id is not None and isinstance(data, str) and data.startswith(_ID_PREFIX):
            # Only the publish script writes here, the id spliced in first (envelopes.attach_id):
            # read it without parsing the whole envelope, once per envelope whatever the sockets.
            envelope_id = data[len(_ID_PREFIX) : data.find('"', len(_ID_PREFIX))]
            _observe_lag(_timestamp_of(data))
        if participant_id is None or not is_stream_id(envelope_id):
            logger.warning("bus skipped a malformed message", extra={"channel": str(channel)[:200]})
            return
        self._manager.deliver(participant_id, str(envelope_id), str(data))


async def _stop(task: "asyncio.Task[None]") -> None:
    await cancel_and_wait([task])
    if task.done() and not task.cancelled() and task.exception() is not None:
        logger.debug("subscription sender ended with an error", exc_info=task.exception())


_ID_PREFIX = '{"id":"'
_TIMESTAMP = '"timestamp":"'


def _timestamp_of(text: str) -> str | None:
    start = text.find(_TIMESTAMP)
    if start < 0:
        return None
    start += len(_TIMESTAMP)
    return text[start : text.find('"', start)]


def _observe_lag(timestamp: object) -> None:
    if isinstance(timestamp, str):
        try:
            published = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        except ValueError:
            return
        metrics.bus_lag.observe(max(0.0, (datetime.now(UTC) - published).total_seconds()))
