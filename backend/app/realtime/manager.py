"""This replica's sockets: participant → connections, each with a bounded queue and its own sender."""

import asyncio
import contextlib
import logging
from collections import defaultdict

import redis.asyncio as aioredis

from app.metrics import registry as metrics
from app.realtime import history
from app.realtime.connection import ClientConnection, ReplayPages
from app.realtime.envelopes import CloseCode, ControlType, control_frame, stream_id_key
from app.realtime.subscriptions import Subscriptions

logger = logging.getLogger(__name__)

# How long a new socket waits for its user's subscription before reading history anyway (it is
# then caught up when the subscription lands).
SUBSCRIBE_WAIT_S = 2.0
CATCH_UP_RETRIES_S = (0.1, 0.5)
# A replay is read from history this many envelopes at a time, the next page once the socket
# has taken the last: a client that stops reading holds one page, not its whole history.
REPLAY_PAGE = 64


class ConnectionManager:
    """Maps participant ids to this replica's open connections and hands envelopes to them."""

    def __init__(
        self,
        redis: aioredis.Redis,
        *,
        history_maxlen: int,
        max_sockets_per_user: int = 20,
        subscriptions: Subscriptions | None = None,
        subscribe_wait_s: float = SUBSCRIBE_WAIT_S,
    ):
        self._redis = redis
        self._history_maxlen = history_maxlen
        self._max_sockets_per_user = max_sockets_per_user
        self._by_participant: dict[str, set[ClientConnection]] = defaultdict(set)
        self.subscriptions = subscriptions or Subscriptions()
        self.subscriptions.on_late_confirmed = self._catch_up_participant
        self._subscribe_wait_s = subscribe_wait_s
        self._catching_up: set[asyncio.Task[None]] = set()

    @property
    def connection_count(self) -> int:
        """How many sockets this replica holds."""
        return sum(len(conns) for conns in self._by_participant.values())

    @property
    def user_count(self) -> int:
        """How many users hold at least one socket on this replica."""
        return len(self._by_participant)

    def connections(self) -> list[ClientConnection]:
        """A snapshot of every open connection."""
        return [conn for conns in self._by_participant.values() for conn in conns]

    def register(self, connection: ClientConnection) -> None:
        """Start routing a participant's live envelopes to this connection (held until released).

        Past WS_MAX_SOCKETS_PER_USER on this replica, the user's oldest socket is closed (4429).
        """
        if connection.participant_id not in self._by_participant:
            self.subscriptions.want(connection.participant_id)
        conns = self._by_participant[connection.participant_id]
        open_ones = [c for c in conns if c.close_code is None]
        if len(open_ones) >= self._max_sockets_per_user:
            oldest = min(open_ones, key=lambda c: c.opened_at)
            oldest.request_close(CloseCode.TOO_MANY_SOCKETS, "too many open sockets for this user")
        conns.add(connection)

    def unregister(self, connection: ClientConnection) -> None:
        """Stop routing envelopes to this connection."""
        conns = self._by_participant.get(connection.participant_id)
        if conns is not None:
            conns.discard(connection)
            if not conns:
                del self._by_participant[connection.participant_id]
                self.subscriptions.drop(connection.participant_id)

    def holds(self, participant_id: str) -> bool:
        """Whether this replica has any socket of the participant."""
        return participant_id in self._by_participant

    def deliver(self, participant_id: str, envelope_id: str, text: str, key: tuple[int, int] | None = None) -> int:
        """Queue one envelope on every socket of the participant; never waits. Returns sockets reached.

        `key` is `stream_id_key(envelope_id)`, when the caller has it (the bus parses it once).
        """
        conns = self._by_participant.get(participant_id)
        if not conns:
            return 0
        if key is None:
            key = stream_id_key(envelope_id)
        reached = sum(conn.offer(envelope_id, text, key) for conn in list(conns))
        metrics.ws_delivered.inc(reached)
        if reached < len(conns):
            metrics.ws_dropped.inc(len(conns) - reached)
        return reached

    async def open(self, connection: ClientConnection, last_id: str | None) -> None:
        """Register a new connection and send `hello`, then history after `last_id`, then the live stream.

        History is read once the user's channel is subscribed here: anything published before
        that is in what is read, anything after comes live (and duplicates are dropped).
        """
        self.register(connection)
        subscriptions, participant_id = self.subscriptions, connection.participant_id
        subscribed = await subscriptions.ready(participant_id, timeout_s=self._subscribe_wait_s)
        epoch = subscriptions.epoch_of(participant_id)
        if last_id is None:
            # Live only: whatever arrives from now on, nothing older.
            head = await history.head_id(self._redis, participant_id)
            replay = history.Replay(head_id=head)
        else:
            replay = await self._history_after(connection, last_id)
        in_place = subscribed and subscriptions.epoch_of(participant_id) == epoch
        self._greet(connection, replay, last_id, in_place=in_place)
        if last_id is None:
            connection.not_owed_before(replay.head_id)
        connection.start()
        if not in_place:
            # The subscription was late or lost while history was read: fill the seam from history.
            self.catch_up_later([connection])

    async def resume(self, connection: ClientConnection, last_id: str) -> None:
        """Replay history after `last_id` on an open connection (a client `resume` frame)."""
        connection.hold()
        subscriptions, participant_id = self.subscriptions, connection.participant_id
        subscribed, epoch = subscriptions.is_confirmed(participant_id), subscriptions.epoch_of(participant_id)
        try:
            replay = await self._history_after(connection, last_id)
        except BaseException:
            connection.release([], [], floor_id=None)
            raise
        in_place = subscribed and subscriptions.epoch_of(participant_id) == epoch
        self._greet(connection, replay, last_id, in_place=in_place)
        if not in_place:
            self.catch_up_later([connection])

    def _greet(
        self, connection: ClientConnection, replay: history.Replay, last_id: str | None, *, in_place: bool
    ) -> None:
        """Queue `hello` and the replay's first page; its other pages follow as the socket takes them."""
        connection.release(
            [self._hello(connection, replay)],
            replay.entries,
            floor_id=last_id,
            keep_held=in_place,
            pages=self._rest_of(connection, replay),
        )

    def _catch_up_participant(self, participant_id: str) -> None:
        # The user's subscription landed after their sockets read history: send them what
        # was published in between (the watermark drops anything they already have).
        # Sockets still opening are left to open(), which checks again after its own read.
        self.catch_up_later([c for c in self._by_participant.get(participant_id, ()) if c.greeted])

    def catch_up_later(self, connections: list[ClientConnection]) -> None:
        """Hold live envelopes on these sockets now, and send each what it missed from history
        in the background (after a bus outage, or a subscription that landed late)."""
        for connection in connections:
            connection.hold()
        task = asyncio.get_running_loop().create_task(self.catch_up(connections))
        self._catching_up.add(task)
        task.add_done_callback(self._catching_up.discard)

    async def catch_up(self, connections: list[ClientConnection]) -> None:
        """Send each held socket what it missed, from history, once its user's subscription is back.

        A user whose subscription does not come back in time is caught up again when it lands.
        """
        participants = list({connection.participant_id for connection in connections})
        waited = await asyncio.gather(
            *(self.subscriptions.ready(p, timeout_s=self._subscribe_wait_s) for p in participants)
        )
        subscribed = dict(zip(participants, waited, strict=True))
        epochs = {p: self.subscriptions.epoch_of(p) for p in participants}
        for connection in connections:
            connection.hold()  # again: a `resume` may have released it while we waited
            after = connection.watermark_id or "0-0"
            try:
                replay = await self._history_after_retrying(connection, after)
            except Exception:
                logger.warning("catch-up failed; closing the socket so its client resumes", exc_info=True)
                connection.release([], [], floor_id=None)
                connection.request_close(CloseCode.SERVICE_RESTART, "please reconnect")
                continue
            # A socket that may have missed something it can no longer get is told, like on connect.
            frames = [] if replay.recovered else [self._hello(connection, replay)]
            participant_id = connection.participant_id
            in_place = (
                subscribed[participant_id] and self.subscriptions.epoch_of(participant_id) == epochs[participant_id]
            )
            entries = connection.not_yet_given(replay.entries)
            connection.release(
                frames,
                entries,
                floor_id=connection.watermark_id,
                keep_held=in_place,
                pages=self._rest_of(connection, replay),
            )
        if connections:
            logger.info("caught up sockets from history", extra={"sockets": len(connections)})

    def ping_all(self) -> None:
        """Queue a `ping` on every greeted socket (the heartbeat); `hello` is always a socket's first frame."""
        ping = control_frame(ControlType.PING)
        for connection in self.connections():
            if connection.greeted:
                connection.offer_control(ping)

    async def run_heartbeat(self, interval_s: float) -> None:
        """Ping every socket every `interval_s`, whatever else it is being sent."""
        while True:
            await asyncio.sleep(interval_s)
            self.ping_all()

    async def drain_and_close(self, code: int, reason: str, *, timeout_s: float) -> None:
        """Let every socket flush its queue (up to `timeout_s`), then close them all with `code`."""
        connections = self.connections()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                await asyncio.gather(*(conn.drain() for conn in connections))
        for connection in connections:
            connection.request_close(code, reason)
        await asyncio.gather(*(conn.stop() for conn in connections), return_exceptions=True)

    async def _history_after_retrying(self, connection: ClientConnection, last_id: str) -> history.Replay:
        # A catch-up follows a reconnect, when the shared client's own connections may still be
        # coming back (seen on a cluster right after a shard restart): a couple of quick tries
        # before the socket is closed and its client made to reconnect.
        for delay_s in CATCH_UP_RETRIES_S:
            try:
                return await self._history_after(connection, last_id)
            except Exception:
                logger.info("history read failed during a catch-up; trying again", exc_info=True)
                await asyncio.sleep(delay_s)
        return await self._history_after(connection, last_id)

    async def _history_after(self, connection: ClientConnection, last_id: str) -> history.Replay:
        return await history.read_after(
            self._redis, connection.participant_id, last_id, limit=REPLAY_PAGE, maxlen=self._history_maxlen
        )

    def _rest_of(self, connection: ClientConnection, replay: history.Replay) -> ReplayPages | None:
        """The pages of `replay` after its first, read as the socket takes them; None if it was all."""
        if not replay.more or not replay.entries or replay.head_id is None:
            return None
        participant_id = connection.participant_id

        async def read(after: str, until: str) -> list[history.HistoryEntry]:
            return await history.read_page(self._redis, participant_id, after, until, limit=REPLAY_PAGE)

        def told_lost() -> str:
            return self._hello(connection, history.Replay(recovered=False, head_id=replay.head_id))

        owed = replay.count - len(replay.entries)
        return ReplayPages(read, replay.entries[-1].id, replay.head_id, owed, told_lost)

    @staticmethod
    def _hello(connection: ClientConnection, replay: history.Replay) -> str:
        return control_frame(
            ControlType.HELLO,
            {
                "connection_id": connection.connection_id,
                "recovered": replay.recovered,
                "replayed": replay.count,
                "head_id": replay.head_id,
            },
        )
