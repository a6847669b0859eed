"""The one Redis pub/sub listener per API replica: the channels of the users it holds → ConnectionManager."""

import asyncio
import logging
import random
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import redis.asyncio as aioredis
from redis.crc import key_slot

from app.core.cancellation import cancel_and_wait
from app.metrics import registry as metrics
from app.realtime.envelopes import parse_stream_id, participant_from_channel, user_channel
from app.realtime.manager import ConnectionManager
from app.realtime.subscriber import Subscriber, SubscriberLost, open_subscriber

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
        read_window_s: float = 0.0,
    ):
        """`client` reaches the Redis that carries the shard's channels; with `sharded` (one
        primary of a Redis Cluster) the listener uses SSUBSCRIBE and SPUBLISH, and
        `canary_channel` must be a channel whose slot that primary owns. Under load the
        subscription is read at most once per `read_window_s` (subscriber.py)."""
        self._client = client
        self._manager = manager
        self._max_backoff_s = max_backoff_s
        self._canary_interval_s = canary_interval_s
        self._shard = shard
        self._sharded = sharded
        self._canary_channel = canary_channel or user_channel(f"__canary__:{uuid.uuid4().hex}")
        self._read_window_s = read_window_s
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.last_canary_heard_at = 0.0
        self._canary_subscribed = asyncio.Event()
        self._canary_heard = asyncio.Event()

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
        self._canary_subscribed.clear()
        self._canary_heard.clear()
        async with open_subscriber(
            self._client, self._on_replies, sharded=self._sharded, read_window_s=self._read_window_s
        ) as subscriber:
            subscriber.subscribe([self._canary_channel])
            # run() reset the shard when the last connection was lost: everything wanted is sent again.
            subscriptions.set_listening(self._shard, True)
            if after_outage:
                # Envelopes are dispatched as they arrive, so hold every greeted socket of the
                # shard before its users' channels are subscribed again: no live envelope may
                # reach one before the history read that fills the outage. Sockets still opening
                # see the lost subscription themselves (`Subscriptions.epoch_of`).
                mine = subscriptions.shard_of
                self._manager.catch_up_later(
                    [c for c in self._manager.connections() if c.greeted and mine(c.participant_id) == self._shard]
                )
            sender = asyncio.create_task(self._send_subscriptions(subscriber), name="bus-subscriptions")
            try:
                await self._wait_for_canary(subscriber, sender)
                self.connected.set()
                logger.info(
                    "bus listener subscribed",
                    extra={"shard": self._shard, "users": subscriptions.wanted_in(self._shard)},
                )
                while True:
                    await self._until_ended(subscriber, sender, timeout_s=self._canary_interval_s)
                    if time.monotonic() - self.last_canary_heard_at > 3 * self._canary_interval_s:
                        raise DeafListener("no canary heard for three intervals")
                    await self._publish_canary()
            finally:
                await _stop(sender)

    async def _send_subscriptions(self, subscriber: Subscriber) -> None:
        # Sockets that open in one turn of the loop share a command.
        subscriptions = self._manager.subscriptions
        changed = subscriptions.changed(self._shard)
        while True:
            await changed.wait()
            await asyncio.sleep(0)
            subscribe, unsubscribe = subscriptions.to_send(self._shard)
            for batch in self._batches([user_channel(p) for p in subscribe]):
                subscriber.subscribe(batch)
            for batch in self._batches([user_channel(p) for p in unsubscribe]):
                subscriber.unsubscribe(batch)

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

    @staticmethod
    async def _until_ended(subscriber: Subscriber, sender: "asyncio.Task[None]", *, timeout_s: float) -> None:
        """Wait up to `timeout_s`; raise at once if the connection or the subscription sender ended."""
        ended: set[asyncio.Future[Any]] = {subscriber.lost, sender}
        await asyncio.wait(ended, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        _raise_if_ended(subscriber, sender)

    async def _wait_for_canary(self, subscriber: Subscriber, sender: "asyncio.Task[None]") -> None:
        # Ready means messages really flow: once Redis confirms the canary's subscription (a
        # publish on another connection could overtake it), publish a canary and hear it.
        await self._wait_for(self._canary_subscribed, "subscribed", subscriber, sender)
        await self._publish_canary()
        await self._wait_for(self._canary_heard, "heard", subscriber, sender)

    async def _wait_for(
        self, event: asyncio.Event, what: str, subscriber: Subscriber, sender: "asyncio.Task[None]"
    ) -> None:
        waiter = asyncio.ensure_future(event.wait())
        try:
            ended: set[asyncio.Future[Any]] = {waiter, subscriber.lost, sender}
            await asyncio.wait(ended, timeout=3 * self._canary_interval_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
        if not event.is_set():
            _raise_if_ended(subscriber, sender)
            raise DeafListener(f"the canary was not {what} in time")

    def _on_replies(self, replies: list[list[object]]) -> None:
        # The pushes of one read, in order, on the event loop (subscriber.py). The read's first
        # envelope waited longest: its lag stands for the read's (a histogram observation per
        # envelope was a third of the Python time of a delivery, docs/performance.md).
        received, first = 0, None
        for reply in replies:
            kind = reply[0]
            if kind == "message" or kind == "smessage":
                received += 1
                if first is None and reply[1] != self._canary_channel:
                    first = reply[2]
                self.dispatch(reply[1], reply[2])
            elif kind in ("subscribe", "ssubscribe") and isinstance(reply[1], str):
                if reply[1] == self._canary_channel:
                    self._canary_subscribed.set()
                elif (participant_id := participant_from_channel(reply[1])) is not None:
                    self._manager.subscriptions.confirmed(participant_id)
        metrics.bus_received.inc(received)
        if isinstance(first, str):
            _observe_lag(_timestamp_of(first))

    def dispatch(self, channel: object, data: object) -> None:
        """Route one pub/sub message; a malformed one is logged and skipped, never raised."""
        if channel == self._canary_channel:
            self.last_canary_heard_at = time.monotonic()
            self._canary_heard.set()
            return
        participant_id = participant_from_channel(channel) if isinstance(channel, str) else None
        if participant_id is not None and not self._manager.holds(participant_id):
            return  # the user's last socket here just closed; the unsubscribe is on its way
        envelope_id = key = None
        if participant_id is not None and isinstance(data, str) and data.startswith(_ID_PREFIX):
            # Only the publish script writes here, the id spliced in first (envelopes.attach_id):
            # read it without parsing the whole envelope, once per envelope whatever the sockets.
            envelope_id = data[len(_ID_PREFIX) : data.find('"', len(_ID_PREFIX))]
            key = parse_stream_id(envelope_id)
        if participant_id is None or envelope_id is None or key is None:
            logger.warning("bus skipped a malformed message", extra={"channel": str(channel)[:200]})
            return
        self._manager.deliver(participant_id, envelope_id, str(data), key)


def _raise_if_ended(subscriber: Subscriber, sender: "asyncio.Task[None]") -> None:
    if subscriber.lost.done():
        raise subscriber.lost.result()
    if sender.done():
        sender.result()  # the subscription commands failed: raise it, so the listener reconnects
        raise SubscriberLost("the subscription sender stopped")


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
