"""The message the API pushes itself is the one Celery's own `send_task` would have pushed."""

import base64
import json
import uuid
from typing import Any

import redis
from celery import Celery
from kombu.transport.redis import Channel as RedisChannel

from app.core.embedded_redis import EmbeddedRedis
from app.tasks.broker_message import (
    UNACKED_INDEX_KEY,
    UNACKED_KEY,
    celery_message,
    task_id_of_queued,
    task_id_of_unacked,
)

# Differs per message by design.
_VARYING_PROPERTIES = ("delivery_tag",)


def _comparable(raw: str | bytes) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(raw)
    message["body"] = json.loads(base64.b64decode(message["body"]))
    for name in _VARYING_PROPERTIES:
        assert message["properties"].pop(name)
    return message


def test_it_matches_what_send_task_writes(redis_server: EmbeddedRedis) -> None:
    app = Celery("broker-message-test", broker=redis_server.url)
    app.conf.update(task_serializer="json", task_ignore_result=True)
    queue = f"broker-message-test-{uuid.uuid4().hex}"
    task_id, participant_id = str(uuid.uuid4()), str(uuid.uuid4())
    client = redis.Redis.from_url(redis_server.url)
    try:
        app.send_task("chat.reply", args=[task_id, participant_id], task_id=task_id, queue=queue)
        (from_celery,) = client.lrange(queue, 0, -1)
        ours = celery_message(app, "chat.reply", task_id, participant_id, queue)
        assert _comparable(ours) == _comparable(from_celery)
        assert json.loads(ours)["properties"]["delivery_tag"] != json.loads(from_celery)["properties"]["delivery_tag"]
    finally:
        client.delete(queue)
        client.close()
        app.close()


def test_the_reconciler_reads_kombus_own_unacked_keys() -> None:
    assert (RedisChannel.unacked_key, RedisChannel.unacked_index_key) == (UNACKED_KEY, UNACKED_INDEX_KEY)


def test_task_ids_are_read_from_queued_and_unacked_entries_and_junk_is_skipped() -> None:
    message = {"headers": {"id": "t-1"}}
    assert task_id_of_queued(json.dumps(message)) == "t-1"
    assert task_id_of_unacked(json.dumps([message, "", "chat"])) == "t-1"
    for junk in ("not json", "[]", '{"a": 1}', "[1]", '{"headers": null}'):
        assert task_id_of_queued(junk) is None and task_id_of_unacked(junk) is None, junk
