"""The one Redis pub/sub listener per API replica: `PSUBSCRIBE ws:user:*` → ConnectionManager."""

import asyncio
import json
import logging
import random
import time
import uuid
from datetime import UTC, datetime

import redis.asyncio as aioredis

from app.metrics import registry as metrics
from app.realtime.envelopes import USER_CHANNEL_PATTERN, is_stream_id, participant_from_channel, user_channel
from app.realtime.manager import ConnectionManager

logger = logging.getLogger(__name__)


class DeafListener(Exception):
    """The subscription looks connected but stopped receiving even our own canary."""


class BusListener:
    """Receives every user's live envelopes and hands them to the local manager; survives Redis blips.

    A canary message is published on a channel the pattern matches every `canary_interval_s`
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
    ):
        self._client = client
        self._manager = manager
        self._max_backoff_s = max_backoff_s
        self._canary_interval_s = canary_interval_s
        self._canary_channel = user_channel(f"__canary__:{uuid.uuid4().hex}")
        self._catch_up: asyncio.Task[None] | None = None
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
                subscribed_before = subscribed_before or self.last_canary_heard_at > 0
                self.reconnects += 1
                metrics.bus_reconnects.inc()
                delay = min(backoff, self._max_backoff_s) * (0.5 + random.random() / 2)
                logger.warning("bus listener lost Redis, retrying", extra={"error": repr(exc), "retry_in_s": delay})
                await asyncio.sleep(delay)
                backoff = min(backoff * 2, self._max_backoff_s)

    async def _listen_once(self, *, after_outage: bool) -> None:
        async with self._client.pubsub(ignore_subscribe_messages=True) as pubsub:
            await pubsub.psubscribe(USER_CHANNEL_PATTERN)
            await self._wait_for_canary(pubsub)
            self.connected.set()
            logger.info("bus listener subscribed", extra={"pattern": USER_CHANNEL_PATTERN})
            if after_outage:
                # Hold every socket now, before any new live message is dispatched, so the
                # history read that follows cannot miss one.
                held = self._manager.hold_all()
                self._catch_up = asyncio.create_task(self._manager.catch_up(held), name="bus-catch-up")
            next_canary = time.monotonic() + self._canary_interval_s
            while True:
                message = await pubsub.get_message(timeout=min(1.0, self._canary_interval_s))
                if message is not None:
                    self.dispatch(message.get("channel"), message.get("data"))
                now = time.monotonic()
                if now >= next_canary:
                    if now - self.last_canary_heard_at > 3 * self._canary_interval_s:
                        raise DeafListener("no canary heard for three intervals")
                    await self._client.publish(self._canary_channel, "canary")
                    next_canary = now + self._canary_interval_s

    async def _wait_for_canary(self, pubsub: aioredis.client.PubSub) -> None:
        # Ready means messages really flow: publish a canary and hear it before saying so.
        await self._client.publish(self._canary_channel, "canary")
        async with asyncio.timeout(3 * self._canary_interval_s):
            while True:
                message = await pubsub.get_message(timeout=1.0)
                if message is not None:
                    self.dispatch(message.get("channel"), message.get("data"))
                    if message.get("channel") == self._canary_channel:
                        return

    def dispatch(self, channel: object, data: object) -> None:
        """Route one pub/sub message; a malformed one is logged and skipped, never raised."""
        if channel == self._canary_channel:
            self.last_canary_heard_at = time.monotonic()
            return
        participant_id = participant_from_channel(channel) if isinstance(channel, str) else None
        if participant_id is not None and not self._manager.holds(participant_id):
            return  # every replica hears every envelope; most are for sockets held elsewhere
        envelope_id = None
        if participant_id is not None and isinstance(data, str):
            try:
                envelope = json.loads(data)
                if isinstance(envelope, dict):
                    envelope_id = envelope.get("id")
                    _observe_lag(envelope.get("timestamp"))
            except ValueError:
                pass
        if participant_id is None or not is_stream_id(envelope_id):
            if not (isinstance(channel, str) and channel.startswith(user_channel("__canary__"))):
                logger.warning("bus skipped a malformed message", extra={"channel": str(channel)[:200]})
            return
        self._manager.deliver(participant_id, str(envelope_id), str(data))


def _observe_lag(timestamp: object) -> None:
    if isinstance(timestamp, str):
        published = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
        metrics.bus_lag.observe(max(0.0, (datetime.now(UTC) - published).total_seconds()))
