"""ConnectionManager and ClientConnection with an in-memory socket (no network, no Redis)."""

import asyncio
import json
from datetime import UTC, datetime, timedelta

from starlette.websockets import WebSocketState

from app.metrics import registry as metrics
from app.realtime.bus import BusListener
from app.realtime.connection import ClientConnection
from app.realtime.envelopes import CloseCode, attach_id, user_channel
from app.realtime.history import HistoryEntry
from app.realtime.manager import ConnectionManager


class RecordingSocket:
    """Records what is sent; can be told to stall like a client that stopped reading."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed_with: int | None = None
        self.application_state = WebSocketState.CONNECTED
        self.stalled = False

    async def send_text(self, text: str) -> None:
        if self.stalled:
            await asyncio.Event().wait()
        self.sent.append(text)

    async def close(self, code: int, reason: str = "") -> None:
        self.closed_with = code
        self.application_state = WebSocketState.DISCONNECTED

    def ids(self) -> list[str]:
        return [json.loads(text)["id"] for text in self.sent if '"id"' in text]

    def types(self) -> list[str]:
        return [json.loads(text)["type"] for text in self.sent if text.startswith("{")]


def _envelope(envelope_id: str) -> str:
    """An envelope as the publish script sends it (the id spliced in first)."""
    return attach_id('{"type":"chat_delta"}', envelope_id)


def _entries(*ids: str) -> list[HistoryEntry]:
    return [HistoryEntry(i, _envelope(i)) for i in ids]


def _connection(socket: RecordingSocket, participant: str = "p1", queue_size: int = 10) -> ClientConnection:
    return ClientConnection(socket, participant, queue_size=queue_size)  # type: ignore[arg-type]


def _manager() -> ConnectionManager:
    return ConnectionManager(redis=None, history_maxlen=100)  # type: ignore[arg-type]


async def _drain() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def test_live_messages_during_replay_are_deduplicated_and_kept_in_order() -> None:
    socket, manager = RecordingSocket(), _manager()
    connection = _connection(socket)
    manager.register(connection)
    # While history is being read, 2-0 (also in the replay) and 3-0 (newer) arrive live.
    manager.deliver("p1", "2-0", _envelope("2-0"))
    manager.deliver("p1", "3-0", _envelope("3-0"))
    connection.release(["HELLO"], _entries("1-0", "2-0"), floor_id="0-5")
    connection.start()
    manager.deliver("p1", "3-0", _envelope("3-0"))  # a duplicate after the switch is dropped too
    manager.deliver("p1", "4-0", _envelope("4-0"))
    await _drain()
    await connection.stop()
    assert socket.sent[0] == "HELLO"
    assert socket.ids() == ["1-0", "2-0", "3-0", "4-0"]


async def test_a_fresh_connection_keeps_live_messages_that_arrived_while_it_opened() -> None:
    socket, manager = RecordingSocket(), _manager()
    connection = _connection(socket)
    manager.register(connection)
    manager.deliver("p1", "5-0", _envelope("5-0"))  # published between register and the head read
    connection.release(["HELLO"], [], floor_id=None)
    connection.not_owed_before("5-0")
    connection.start()
    manager.deliver("p1", "6-0", _envelope("6-0"))
    await _drain()
    await connection.stop()
    assert socket.ids() == ["5-0", "6-0"] and connection.watermark_id == "6-0"


async def test_a_fresh_connection_does_not_skip_envelopes_still_on_their_way() -> None:
    # 5-0 arrived live while the socket opened; 6-0 and 7-0 were published before the head read
    # (so the head is 7-0) but were still in the channel. The run must not jump from 5-0 to 8-0.
    socket, manager = RecordingSocket(), _manager()
    connection = _connection(socket)
    manager.register(connection)
    manager.deliver("p1", "5-0", _envelope("5-0"))
    connection.release(["HELLO"], [], floor_id=None)
    connection.not_owed_before("7-0")
    connection.start()
    for envelope_id in ("6-0", "7-0", "8-0"):
        manager.deliver("p1", envelope_id, _envelope(envelope_id))
    await _drain()
    await connection.stop()
    assert socket.ids() == ["5-0", "6-0", "7-0", "8-0"]


async def test_held_envelopes_are_dropped_when_the_subscription_was_not_in_place() -> None:
    # They may start after a gap (the subscription landed during the read): the socket starts
    # at the head instead, and a catch-up from history fills in from there.
    socket, manager = RecordingSocket(), _manager()
    connection = _connection(socket)
    manager.register(connection)
    manager.deliver("p1", "9-0", _envelope("9-0"))
    connection.release(["HELLO"], [], floor_id=None, keep_held=False)
    connection.not_owed_before("7-0")
    connection.start()
    await _drain()
    await connection.stop()
    assert socket.sent == ["HELLO"] and connection.watermark_id == "7-0"


class _History:
    """One user's history stream in memory: the reads the manager makes, nothing more."""

    def __init__(self, *ids: str) -> None:
        self.ids = list(ids)

    async def xrevrange(self, key: str, count: int) -> list[tuple[str, dict[str, str]]]:
        return [(i, {"e": '{"type":"chat_delta"}'}) for i in reversed(self.ids)][:count]

    async def xinfo_stream(self, key: str) -> dict[str, object]:
        return {
            "length": len(self.ids),
            "first-entry": (self.ids[0], {}) if self.ids else None,
            "last-entry": (self.ids[-1], {}) if self.ids else None,
            "max-deleted-entry-id": "0-0",
        }

    async def xrange(self, key: str, min: str, max: str, count: int) -> list[tuple[str, dict[str, str]]]:
        after = min.lstrip("(")
        return [(i, {"e": '{"type":"chat_delta"}'}) for i in self.ids if after < i <= max][:count]


async def test_a_subscription_lost_while_a_socket_opens_is_filled_from_history() -> None:
    # The bus lost Redis during the history read (the epoch moved): what was held may have a
    # hole, so the socket is caught up from history once the subscription is back.
    redis = _History("1-0")
    manager = ConnectionManager(redis=redis, history_maxlen=100, subscribe_wait_s=1.0)  # type: ignore[arg-type]
    manager.subscriptions.set_listening(0, True)
    socket = RecordingSocket()
    connection = _connection(socket)
    opening = asyncio.create_task(manager.open(connection, None))
    await _drain()
    manager.subscriptions.to_send()
    manager.subscriptions.confirmed("p1")
    manager.deliver("p1", "2-0", _envelope("2-0"))
    original_xrevrange = redis.xrevrange

    async def read_during_an_outage(key: str, count: int) -> list[tuple[str, dict[str, str]]]:
        redis.ids.append("2-0")
        head = await original_xrevrange(key, count)
        manager.subscriptions.reset()  # Redis dropped the subscription; 3-0 is published unheard
        redis.ids.append("3-0")
        return head

    redis.xrevrange = read_during_an_outage  # type: ignore[method-assign]
    await opening
    manager.subscriptions.set_listening(0, True)
    manager.subscriptions.to_send()
    manager.subscriptions.confirmed("p1")
    redis.ids.append("4-0")
    manager.deliver("p1", "4-0", _envelope("4-0"))
    for _ in range(5):
        await _drain()
    await connection.stop()
    assert socket.ids() == ["3-0", "4-0"]


async def test_resume_replays_after_the_given_id_then_continues_live() -> None:
    socket, manager = RecordingSocket(), _manager()
    connection = _connection(socket)
    manager.register(connection)
    connection.release(["HELLO"], _entries("1-0", "2-0"), floor_id=None)
    connection.start()
    connection.hold()  # what manager.resume does before reading history
    manager.deliver("p1", "3-0", _envelope("3-0"))
    connection.release(["HELLO-AGAIN"], _entries("2-0", "3-0"), floor_id="1-0")
    manager.deliver("p1", "4-0", _envelope("4-0"))
    await _drain()
    await connection.stop()
    assert socket.sent.index("HELLO-AGAIN") == 3
    # The resume asked for everything after 1-0, so 2-0 comes again; 3-0 only once.
    assert socket.ids() == ["1-0", "2-0", "2-0", "3-0", "4-0"]


async def test_a_full_queue_closes_only_that_socket_with_4408() -> None:
    slow, fast = RecordingSocket(), RecordingSocket()
    slow.stalled = True
    manager = _manager()
    slow_conn, fast_conn = _connection(slow, queue_size=3), _connection(fast, queue_size=3)
    for conn in (slow_conn, fast_conn):
        manager.register(conn)
        conn.release(["HELLO"], [], floor_id=None)
        conn.start()
    for i in range(1, 10):
        manager.deliver("p1", f"{i}-0", _envelope(f"{i}-0"))
        await _drain()
    assert slow.closed_with == CloseCode.SLOW_CONSUMER
    assert fast.closed_with is None
    assert fast.ids() == [f"{i}-0" for i in range(1, 10)]
    for conn in (slow_conn, fast_conn):
        await conn.stop()


async def test_unwritten_bytes_count_against_the_budget_a_whole_replay_included() -> None:
    socket = RecordingSocket()
    socket.stalled = True
    conn = ClientConnection(socket, "p1", queue_size=100, queue_bytes=10_000)  # type: ignore[arg-type]
    big = [HistoryEntry(f"{i}-0", "x" * 1000) for i in range(1, 31)]  # 30 kB: more than the budget
    conn.release(["HELLO"], big, floor_id=None)  # an idle socket still gets a whole replay
    conn.start()
    await _drain()
    assert conn.close_code is None and conn.replaying and conn.unsent_bytes > 10_000
    conn.offer("31-0", _envelope("31-0"))  # anything more, while the replay sits unwritten, is too much
    assert conn.close_code == CloseCode.SLOW_CONSUMER
    await conn.stop()


async def test_a_replay_is_in_flight_until_written() -> None:
    socket = RecordingSocket()
    conn = _connection(socket)
    conn.release(["HELLO"], _entries("1-0", "2-0"), floor_id=None)
    assert conn.replaying
    conn.start()
    await _drain()
    assert not conn.replaying and conn.unsent_bytes == 0 and socket.ids() == ["1-0", "2-0"]
    assert [conn.may_resume() for _ in range(4)] == [True, True, True, False], "three at once, then paced"
    await conn.stop()


async def test_deliver_reaches_every_socket_of_the_participant_and_no_one_else() -> None:
    manager = _manager()
    sockets = [RecordingSocket() for _ in range(3)]
    connections = [_connection(s, pid) for s, pid in zip(sockets, ["a", "a", "b"], strict=True)]
    for conn in connections:
        manager.register(conn)
        conn.release(["HELLO"], [], floor_id=None)
        conn.start()
    assert manager.deliver("a", "1-0", _envelope("1-0")) == 2
    assert manager.connection_count == 3
    await _drain()
    assert [len(s.sent) for s in sockets] == [2, 2, 1]
    manager.unregister(connections[0])
    assert manager.deliver("a", "2-0", _envelope("2-0")) == 1
    for conn in connections:
        await conn.stop()


async def test_heartbeat_pings_every_socket_even_while_streaming() -> None:
    manager = _manager()
    socket = RecordingSocket()
    connection = _connection(socket)
    manager.register(connection)
    connection.release(["HELLO"], [], floor_id=None)
    connection.start()
    heartbeat = asyncio.create_task(manager.run_heartbeat(0.02))
    async with asyncio.timeout(2):
        i = 0
        while socket.types().count("ping") < 3:
            i += 1
            manager.deliver("p1", f"{i}-0", _envelope(f"{i}-0"))
            await asyncio.sleep(0.005)
    heartbeat.cancel()
    await connection.stop()


async def test_a_socket_is_not_pinged_before_its_hello() -> None:
    # Opening thousands of sockets at once, a heartbeat can fall while one's history is read.
    manager = _manager()
    socket = RecordingSocket()
    connection = _connection(socket)
    manager.register(connection)
    connection.hold()
    connection.start()
    manager.ping_all()
    connection.release(["HELLO"], [], floor_id=None)
    manager.ping_all()
    await _drain()
    assert socket.sent[0] == "HELLO"
    assert socket.types() == ["ping"]
    await connection.stop()


async def test_drain_and_close_flushes_queues_then_closes_with_1012() -> None:
    manager = _manager()
    socket = RecordingSocket()
    connection = _connection(socket, queue_size=100)
    manager.register(connection)
    connection.release(["HELLO"], [], floor_id=None)
    for i in range(1, 50):
        manager.deliver("p1", f"{i}-0", _envelope(f"{i}-0"))
    connection.start()
    await manager.drain_and_close(CloseCode.SERVICE_RESTART, "bye", timeout_s=2)
    assert socket.ids() == [f"{i}-0" for i in range(1, 50)]
    assert socket.closed_with == CloseCode.SERVICE_RESTART


async def test_bus_skips_malformed_messages_and_delivers_good_ones() -> None:
    manager = _manager()
    socket = RecordingSocket()
    connection = _connection(socket)
    manager.register(connection)
    connection.release(["HELLO"], [], floor_id=None)
    connection.start()
    bus = BusListener(client=None, manager=manager)  # type: ignore[arg-type]
    for channel, data in [
        (user_channel("p1"), "not json"),
        (user_channel("p1"), json.dumps({"id": "nope"})),
        (user_channel("p1"), attach_id('{"type":"chat_delta"}', "nope")),
        (user_channel("p1"), json.dumps([1, 2])),
        ("elsewhere", _envelope("1-0")),
        (user_channel("p1"), b"bytes"),
        (user_channel("p1"), _envelope("2-0")),
    ]:
        bus.dispatch(channel, data)
    await _drain()
    await connection.stop()
    assert socket.sent == ["HELLO", _envelope("2-0")]


async def test_the_bus_counts_every_message_of_a_read_and_observes_the_lag_of_its_first() -> None:
    manager = _manager()
    socket = RecordingSocket()
    connection = _connection(socket)
    manager.register(connection)
    connection.release([], [], floor_id=None)
    connection.start()
    bus = BusListener(client=None, manager=manager)  # type: ignore[arg-type]
    received, lag_count, lag_sum = metrics.total_of(metrics.bus_received), _lag("count"), _lag("sum")

    def stamped(envelope_id: str, seconds_ago: float) -> str:
        at = datetime.now(UTC) - timedelta(seconds=seconds_ago)
        return attach_id(f'{{"type":"chat_delta","timestamp":"{at.isoformat()}"}}', envelope_id)

    channel = user_channel("p1")
    bus._on_replies([["message", channel, stamped("1-0", 30.0)], ["message", channel, stamped("2-0", 0.0)]])
    await _drain()
    assert socket.ids() == ["1-0", "2-0"]
    assert metrics.total_of(metrics.bus_received) == received + 2
    assert _lag("count") == lag_count + 1, "one observation per read"
    assert 29 < _lag("sum") - lag_sum < 60, "the first envelope's lag: it waited longest"
    await connection.stop()


def _lag(part: str) -> float:
    """The lag histogram's `count` or `sum`."""
    (family,) = metrics.bus_lag.collect()
    return next(sample.value for sample in family.samples if sample.name.endswith(f"_{part}"))
