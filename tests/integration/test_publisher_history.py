"""The worker-side publisher and the history reader against real Redis servers.

Both the embedded redis-server (6.2, no `max-deleted-entry-id`) and the machine's Redis 7
(when reachable, on a dedicated database number; keys are unique per test, nothing is flushed).
"""

import json
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
import redis.asyncio as aioredis

from app.core.embedded_redis import EmbeddedRedis
from app.realtime import history
from app.realtime.envelopes import EnvelopeType, history_key, id_ahead, user_channel
from app.realtime.publisher import AsyncEnvelopePublisher, EnvelopePublisher, Outgoing

SYSTEM_REDIS_URL = os.environ.get("TASKWIRE_TEST_SYSTEM_REDIS_URL", "redis://127.0.0.1:6379/15")


def _system_redis_available() -> bool:
    try:
        return bool(redis.Redis.from_url(SYSTEM_REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


@pytest.fixture(
    params=[
        "embedded",
        pytest.param(
            "system",
            marks=pytest.mark.skipif(not _system_redis_available(), reason=f"no Redis at {SYSTEM_REDIS_URL}"),
        ),
    ]
)
def redis_url(request: pytest.FixtureRequest, redis_server: EmbeddedRedis) -> str:
    return redis_server.url if request.param == "embedded" else SYSTEM_REDIS_URL


@pytest.fixture
def sync_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    client.close()


@pytest.fixture
async def async_client(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
def participant(sync_client: redis.Redis) -> Iterator[str]:
    participant_id = f"test-{uuid.uuid4()}"
    yield participant_id
    sync_client.delete(history_key(participant_id))


def test_publish_stores_history_and_publishes_the_same_envelope(sync_client: redis.Redis, participant: str) -> None:
    publisher = EnvelopePublisher(sync_client, history_maxlen=100, history_ttl_s=3600)
    with sync_client.pubsub(ignore_subscribe_messages=True) as pubsub:
        pubsub.subscribe(user_channel(participant))
        envelope_id = publisher.publish(participant, EnvelopeType.CHAT_DELTA, "task-1", {"delta": "héllo ✓"})
        message = None
        for _ in range(50):
            message = pubsub.get_message(timeout=0.1)
            if message is not None:
                break
    assert message is not None, "the envelope was not published"
    live = json.loads(message["data"])
    assert live["id"] == envelope_id
    assert live["type"] == "chat_delta" and live["data"] == {"delta": "héllo ✓"} and live["task_id"] == "task-1"
    stored = sync_client.xrange(history_key(participant))
    assert [entry_id for entry_id, _ in stored] == [envelope_id]
    assert 0 < sync_client.ttl(history_key(participant)) <= 3600


async def test_read_after_returns_newer_entries_in_order(
    sync_client: redis.Redis, async_client: aioredis.Redis, participant: str
) -> None:
    publisher = EnvelopePublisher(sync_client, history_maxlen=100, history_ttl_s=3600)
    ids = [publisher.publish(participant, EnvelopeType.CHAT_DELTA, "t", {"delta": str(i)}) for i in range(5)]
    replay = await history.read_after(async_client, participant, ids[1], limit=100)
    assert [entry.id for entry in replay.entries] == ids[2:]
    assert [json.loads(entry.text)["data"]["delta"] for entry in replay.entries] == ["2", "3", "4"]
    assert replay.recovered is True and replay.head_id == ids[-1]
    assert await history.head_id(async_client, participant) == ids[-1]


async def test_read_after_reports_trimmed_history_as_not_recovered(
    sync_client: redis.Redis, async_client: aioredis.Redis, participant: str
) -> None:
    publisher = EnvelopePublisher(sync_client, history_maxlen=100, history_ttl_s=3600)
    first = publisher.publish(participant, EnvelopeType.CHAT_DELTA, "t", {"delta": "old"})
    for i in range(20):
        publisher.publish(participant, EnvelopeType.CHAT_DELTA, "t", {"delta": str(i)})
    sync_client.xtrim(history_key(participant), maxlen=5, approximate=False)  # the first entries are gone
    replay = await history.read_after(async_client, participant, first, limit=100)
    assert replay.recovered is False
    assert len(replay.entries) == 5


async def test_read_after_on_missing_history_is_not_recovered(async_client: aioredis.Redis, participant: str) -> None:
    replay = await history.read_after(async_client, participant, "1-0", limit=100)
    assert replay.recovered is False and replay.entries == [] and replay.head_id is None


def test_a_publish_repeated_with_its_chosen_id_is_done_once(sync_client: redis.Redis, participant: str) -> None:
    # A result whose reply was lost is published again: the same envelope at the same chosen id.
    publisher = EnvelopePublisher(sync_client, history_maxlen=100, history_ttl_s=3600)
    first = publisher.publish(participant, EnvelopeType.CHAT_DELTA, "t", {"delta": "a"})
    chosen = id_ahead(first, headroom_ms=500)
    stamp = "2026-12-02T10:00:00.000Z"
    body = {"message": "the answer"}
    ids = [
        publisher.publish(participant, EnvelopeType.CHAT_RESULT, "t", body, envelope_id=chosen, timestamp=stamp)
        for _ in range(2)
    ]
    assert ids == [chosen, chosen]
    assert [entry_id for entry_id, _ in sync_client.xrange(history_key(participant))] == [first, chosen]
    # Another envelope asking for the same id is no repeat: it takes the next free one.
    other = publisher.publish(participant, EnvelopeType.CHAT_RESULT, "t", {"message": "x"}, envelope_id=chosen)
    assert other != chosen and sync_client.xlen(history_key(participant)) == 3


async def test_publishes_whose_script_was_lost_mid_batch_are_sent_again_each_to_its_caller(
    sync_client: redis.Redis, async_client: aioredis.Redis, participant: str
) -> None:
    # Redis forgets its scripts in the middle of a batch (a restart, SCRIPT FLUSH): the publishes
    # before keep their ids, those after are sent again, and every caller hears its own envelope's id.
    publisher = AsyncEnvelopePublisher(async_client, history_maxlen=100, history_ttl_s=3600)
    flushed = Outgoing(participant, EnvelopeType.CHAT_DELTA, "t", {"delta": "0"}, also=lambda pipe: pipe.script_flush())
    batch = [flushed] + [Outgoing(participant, EnvelopeType.CHAT_DELTA, "t", {"delta": str(i)}) for i in range(1, 4)]
    ids = await publisher.publish_many(batch)
    assert all(isinstance(envelope_id, str) for envelope_id in ids), ids
    stored = {entry_id: json.loads(fields["e"]) for entry_id, fields in sync_client.xrange(history_key(participant))}
    assert len(stored) == 4, "each envelope is in the history once"
    assert [stored[envelope_id]["data"]["delta"] for envelope_id in ids] == ["0", "1", "2", "3"]
