"""Which users' channels this replica listens to: those of the users it holds a socket for.

A replica used to subscribe to the pattern `ws:user:*` and drop the envelopes of users it did
not hold: every replica heard every envelope. Now the connection manager says when a user's
first socket arrives (`want`) and their last leaves (`drop`); the bus listener sends the
difference as batched SUBSCRIBE / UNSUBSCRIBE commands and reports each confirmation here.

A socket must not read its starting point in history before its user's subscription is in
place, or an envelope published in between would be neither in the history it read nor in
the live stream: `ready()` waits for the confirmation. If it does not come in time (the bus
is reconnecting, Redis is slow), the user is marked `late`, and their sockets catch up from
history once it does.

No I/O here: this is the bookkeeping, shared by the manager and the bus listener.
"""

import asyncio
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class _Shard:
    """One subscription connection's side: a plain Redis has one, a Redis Cluster one per primary."""

    wanted: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)  # sent SUBSCRIBE (and no UNSUBSCRIBE since)
    changed: asyncio.Event = field(default_factory=asyncio.Event)  # something to send
    listening: bool = False  # its listener is connected and sends what it is asked
    # Connections lost: a socket whose history read spans a change may have missed live
    # envelopes in between, and is caught up.
    epoch: int = 0


class Subscriptions:
    """Wanted, sent and confirmed subscriptions of one replica, by participant id.

    `shard_of` says which subscription connection serves a user (always 0 on a plain Redis;
    on a cluster, the primary that owns the user's slot).
    """

    def __init__(self, shards: int = 1, shard_of: Callable[[str], int] | None = None) -> None:
        self._shards = [_Shard() for _ in range(shards)]
        self.shard_of: Callable[[str], int] = shard_of or (lambda _participant_id: 0)
        self._in_flight: Counter[str] = Counter()  # SUBSCRIBE replies still to come
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._late: set[str] = set()
        self.on_late_confirmed: Callable[[str], None] | None = None

    @property
    def shards(self) -> int:
        """How many subscription connections there are."""
        return len(self._shards)

    def wanted_in(self, shard: int) -> int:
        """How many of them the shard serves."""
        return len(self._shards[shard].wanted)

    def changed(self, shard: int = 0) -> asyncio.Event:
        """Set when the shard has subscriptions to send."""
        return self._shards[shard].changed

    def set_listening(self, shard: int, listening: bool) -> None:
        """The shard's listener is (or is no longer) connected and sending what it is asked."""
        self._shards[shard].listening = listening

    def is_listening(self, shard: int = 0) -> bool:
        """Whether the shard's listener is connected."""
        return self._shards[shard].listening

    def epoch_of(self, participant_id: str) -> int:
        """How many times the connection serving the user was lost (see `_Shard.epoch`)."""
        return self._shards[self.shard_of(participant_id)].epoch

    def is_confirmed(self, participant_id: str) -> bool:
        """Whether Redis confirmed the user's subscription (and nothing unsubscribed it since)."""
        return participant_id in self._confirmed

    def want(self, participant_id: str) -> None:
        """The user's first socket arrived here: listen to their channel."""
        shard = self._shards[self.shard_of(participant_id)]
        shard.wanted.add(participant_id)
        if participant_id not in shard.active:
            shard.changed.set()

    def drop(self, participant_id: str) -> None:
        """The user's last socket here closed: stop listening to their channel."""
        shard = self._shards[self.shard_of(participant_id)]
        shard.wanted.discard(participant_id)
        self._late.discard(participant_id)
        if participant_id in shard.active:
            shard.changed.set()

    async def ready(self, participant_id: str, *, timeout_s: float) -> bool:
        """Wait until the user's subscription is confirmed; False (and the user marked late) if
        its listener is not connected or it takes longer than `timeout_s`."""
        if participant_id in self._confirmed:
            return True
        if self._shards[self.shard_of(participant_id)].listening:
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.setdefault(participant_id, []).append(waiter)
            try:
                async with asyncio.timeout(timeout_s):
                    await waiter
                return True
            except TimeoutError:
                pass
            finally:
                waiters = self._waiters.get(participant_id, [])
                if waiter in waiters:
                    waiters.remove(waiter)
                if not waiters:
                    self._waiters.pop(participant_id, None)
        self._late.add(participant_id)
        return False

    def to_send(self, shard: int = 0) -> tuple[list[str], list[str]]:
        """What the shard should subscribe and unsubscribe now, recorded as sent."""
        state = self._shards[shard]
        state.changed.clear()
        subscribe = sorted(state.wanted - state.active)
        unsubscribe = sorted(state.active - state.wanted)
        for participant_id in subscribe:
            state.active.add(participant_id)
            self._in_flight[participant_id] += 1
        for participant_id in unsubscribe:
            state.active.discard(participant_id)
            self._confirmed.discard(participant_id)
        return subscribe, unsubscribe

    def confirmed(self, participant_id: str) -> None:
        """Redis confirmed one SUBSCRIBE of the user's channel."""
        if self._in_flight[participant_id] > 0:
            self._in_flight[participant_id] -= 1
        active = participant_id in self._shards[self.shard_of(participant_id)].active
        if self._in_flight[participant_id] > 0 or not active:
            return  # an older reply: a later SUBSCRIBE (after an UNSUBSCRIBE) is still on its way
        del self._in_flight[participant_id]
        self._confirmed.add(participant_id)
        for waiter in self._waiters.pop(participant_id, []):
            if not waiter.done():
                waiter.set_result(None)
        if participant_id in self._late:
            self._late.discard(participant_id)
            if self.on_late_confirmed is not None:
                self.on_late_confirmed(participant_id)

    def reset(self, shard: int = 0) -> None:
        """The shard's subscription connection is gone: nothing of it is subscribed any more
        (all will be sent again)."""
        state = self._shards[shard]
        state.listening = False
        state.epoch += 1
        # Replies still owed on the old connection never come, whoever they were for.
        for participant_id in [p for p in self._in_flight if self.shard_of(p) == shard]:
            del self._in_flight[participant_id]
        self._confirmed -= state.active
        state.active.clear()
        state.changed.set()
