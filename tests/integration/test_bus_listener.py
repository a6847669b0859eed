"""The bus listener's own subscribe connection on a real Redis: batched reads, credentials, a
lost or deaf connection."""

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from app.core.embedded_redis import EmbeddedRedis
from app.realtime.bus import BusListener
from app.realtime.manager import ConnectionManager
from app.realtime.subscriber import SubscriberLost, open_subscriber

pytestmark = pytest.mark.integration


@pytest.fixture
async def client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    connection = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield connection
    await connection.aclose()


@pytest.fixture
def locked_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own that asks for a password, and has a user `bus` with another."""
    with EmbeddedRedis(tmp_path / "locked") as server, redis.Redis(port=server.port) as admin:
        admin.execute_command("ACL", "SETUSER", "bus", "on", ">bus-secret", "~*", "&*", "+@all")
        admin.config_set("requirepass", "default-secret")
        yield server


def _channel() -> str:
    return f"test:bus-listener:{uuid.uuid4().hex}"


async def _until(condition: Callable[[], object], what: str, timeout_s: float = 10) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
        await asyncio.sleep(0.01)


async def test_a_burst_published_in_one_write_arrives_whole_and_in_order(client: aioredis.Redis) -> None:
    replies: list[list[object]] = []
    channel = _channel()
    async with open_subscriber(client, replies.extend) as subscriber:
        subscriber.subscribe([channel])
        await _until(lambda: replies, "the subscription's confirmation")
        async with client.pipeline(transaction=False) as pipe:
            for i in range(3000):
                pipe.publish(channel, f"{i}:" + "é" * 200)  # ~1.2 MB: many socket reads, split anywhere
            await pipe.execute()
        await _until(lambda: len(replies) == 3001, "every message")
    assert replies[0] == ["subscribe", channel, 1]
    assert [reply[2] for reply in replies[1:]] == [f"{i}:" + "é" * 200 for i in range(3000)]


async def test_under_load_reads_wait_for_the_window_and_a_quiet_spell_reads_at_once(client: aioredis.Redis) -> None:
    window_s = 0.3
    reads: list[tuple[list[str], float]] = []  # the messages of each read, and when it came
    confirmed: list[object] = []
    channel = _channel()
    loop = asyncio.get_running_loop()

    def on_replies(replies: list[list[object]]) -> None:
        messages = [str(reply[2]) for reply in replies if reply[0] == "message"]
        confirmed.extend(reply for reply in replies if reply[0] != "message")
        if messages:
            reads.append((messages, loop.time()))

    async def publish(message: str) -> float:
        await client.publish(channel, message)
        return loop.time()

    async def quiet_spell() -> None:
        await asyncio.sleep(2.5 * window_s)  # past any pause, and long enough to read at once after

    async with open_subscriber(client, on_replies, read_window_s=window_s) as subscriber:
        subscriber.subscribe([channel])
        await _until(lambda: confirmed, "the subscription's confirmation")
        await quiet_spell()
        sent = await publish("a")
        await _until(lambda: len(reads) == 1, "a")
        sent = await publish("b")  # soon after a read: read at once, but the next read must wait
        await _until(lambda: len(reads) == 2, "b")
        assert reads[1][1] - sent < window_s / 2, "b came right after a quiet read"
        await publish("c")
        await publish("d")
        await _until(lambda: len(reads) == 3, "c and d")
        assert reads[2][1] - reads[1][1] >= window_s * 0.9, "c waited for the window after b's read"
        await quiet_spell()
        sent = await publish("e")
        await _until(lambda: len(reads) == 4, "e")
        assert reads[3][1] - sent < window_s / 2, "after a quiet spell a message is read at once"
        for message in ("f", "g"):  # fewer than two a window: each read as it comes
            await asyncio.sleep(0.7 * window_s)
            sent = await publish(message)
            await _until(lambda m=message: reads[-1][0] == [m], message)
            assert reads[-1][1] - sent < window_s / 2, f"{message} came one at a time, it was not held"
    assert [messages for messages, _ in reads] == [["a"], ["b"], ["c", "d"], ["e"], ["f"], ["g"]]


@pytest.mark.parametrize("credentials", [":default-secret@", "bus:bus-secret@"], ids=["password", "user"])
async def test_the_subscriber_authenticates_as_the_url_says(locked_redis: EmbeddedRedis, credentials: str) -> None:
    client = aioredis.Redis.from_url(f"redis://{credentials}127.0.0.1:{locked_redis.port}/0", decode_responses=True)
    replies: list[list[object]] = []
    channel = _channel()
    try:
        async with open_subscriber(client, replies.extend) as subscriber:
            subscriber.subscribe([channel])
            await _until(lambda: replies, "the subscription's confirmation")
            await client.publish(channel, "hello")
            await _until(lambda: len(replies) == 2, "the message")
        assert replies[1] == ["message", channel, "hello"]
    finally:
        await client.aclose()


async def test_wrong_credentials_are_a_clear_error_not_a_hang(locked_redis: EmbeddedRedis) -> None:
    client = aioredis.Redis.from_url(f"redis://:wrong@127.0.0.1:{locked_redis.port}/0")
    try:
        async with asyncio.timeout(5):
            with pytest.raises(SubscriberLost, match="refused the bus's credentials"):
                async with open_subscriber(client, lambda _replies: None):
                    pass
    finally:
        await client.aclose()


async def test_a_connection_killed_by_redis_is_noticed_at_once(locked_redis: EmbeddedRedis) -> None:
    # A Redis of its own: killing every subscriber there touches no other test's.
    client = aioredis.Redis.from_url(f"redis://:default-secret@127.0.0.1:{locked_redis.port}/0", decode_responses=True)
    replies: list[list[object]] = []
    try:
        async with open_subscriber(client, replies.extend) as subscriber:
            subscriber.subscribe([_channel()])
            await _until(lambda: replies, "the subscription's confirmation")
            assert await client.client_kill_filter(_type="pubsub") == 1
            reason = await asyncio.wait_for(asyncio.shield(subscriber.lost), 5)
        assert isinstance(reason, SubscriberLost) and "closed by Redis" in str(reason)
    finally:
        await client.aclose()


class _Muffled:
    """The bus client, except that publishes after the first `audible` go nowhere: a subscription
    that looks connected but hears nothing."""

    def __init__(self, client: aioredis.Redis, audible: int) -> None:
        self.connection_pool = client.connection_pool
        self._client = client
        self.audible = audible
        self.published = 0

    async def publish(self, channel: str, message: str) -> int:
        self.published += 1
        if self.published > self.audible:
            return 0
        return int(await self._client.publish(channel, message))


def _manager(client: aioredis.Redis) -> ConnectionManager:
    return ConnectionManager(client, history_maxlen=100)


async def test_a_listener_that_hears_nothing_is_never_ready_and_keeps_retrying(client: aioredis.Redis) -> None:
    muffled = _Muffled(client, audible=0)
    bus = BusListener(muffled, _manager(client), canary_interval_s=0.05, max_backoff_s=0.05)  # type: ignore[arg-type]
    task = asyncio.create_task(bus.run())
    try:
        async with asyncio.timeout(10):
            while bus.reconnects < 2:
                await asyncio.sleep(0.01)
        assert not bus.connected.is_set(), "a deaf subscription must not count as ready"
        assert muffled.published >= 2, "each attempt publishes a canary and waits to hear it"
    finally:
        task.cancel()


async def test_a_listener_that_goes_deaf_after_working_is_detected_and_rebuilt(client: aioredis.Redis) -> None:
    bus = BusListener(_Muffled(client, audible=1), _manager(client), canary_interval_s=0.05, max_backoff_s=0.05)  # type: ignore[arg-type]
    task = asyncio.create_task(bus.run())
    try:
        async with asyncio.timeout(10):
            await bus.connected.wait()  # the first canary was heard
            while bus.reconnects < 1:
                await asyncio.sleep(0.01)
        assert not bus.connected.is_set()
    finally:
        task.cancel()
