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


class Subscriptions:
    """Wanted, sent and confirmed subscriptions of one replica, by participant id."""

    def __init__(self) -> None:
        self._wanted: set[str] = set()
        self._active: set[str] = set()  # sent SUBSCRIBE (and no UNSUBSCRIBE since)
        self._in_flight: Counter[str] = Counter()  # SUBSCRIBE replies still to come
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._late: set[str] = set()
        self.changed = asyncio.Event()  # something to send
        self.listening = False  # the bus listener is connected and sends what it is asked
        # Counts connections lost: a socket whose history read spans a change may have missed
        # live envelopes in between, and is caught up.
        self.epoch = 0
        self.on_late_confirmed: Callable[[str], None] | None = None

    @property
    def wanted(self) -> set[str]:
        """The participants this replica holds sockets for."""
        return set(self._wanted)

    def is_confirmed(self, participant_id: str) -> bool:
        """Whether Redis confirmed the user's subscription (and nothing unsubscribed it since)."""
        return participant_id in self._confirmed

    def want(self, participant_id: str) -> None:
        """The user's first socket arrived here: listen to their channel."""
        self._wanted.add(participant_id)
        if participant_id not in self._active:
            self.changed.set()

    def drop(self, participant_id: str) -> None:
        """The user's last socket here closed: stop listening to their channel."""
        self._wanted.discard(participant_id)
        self._late.discard(participant_id)
        if participant_id in self._active:
            self.changed.set()

    async def ready(self, participant_id: str, *, timeout_s: float) -> bool:
        """Wait until the user's subscription is confirmed; False (and the user marked late) if
        the bus is not listening or it takes longer than `timeout_s`."""
        if participant_id in self._confirmed:
            return True
        if self.listening:
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

    def to_send(self) -> tuple[list[str], list[str]]:
        """What to subscribe and unsubscribe now, recorded as sent."""
        self.changed.clear()
        subscribe = sorted(self._wanted - self._active)
        unsubscribe = sorted(self._active - self._wanted)
        for participant_id in subscribe:
            self._active.add(participant_id)
            self._in_flight[participant_id] += 1
        for participant_id in unsubscribe:
            self._active.discard(participant_id)
            self._confirmed.discard(participant_id)
        return subscribe, unsubscribe

    def confirmed(self, participant_id: str) -> None:
        """Redis confirmed one SUBSCRIBE of the user's channel."""
        if self._in_flight[participant_id] > 0:
            self._in_flight[participant_id] -= 1
        if self._in_flight[participant_id] > 0 or participant_id not in self._active:
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

    def reset(self) -> None:
        """The subscription connection is gone: nothing is subscribed any more (all will be sent again)."""
        self.listening = False
        self.epoch += 1
        self._active.clear()
        self._in_flight.clear()
        self._confirmed.clear()
        self.changed.set()
