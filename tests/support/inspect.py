"""Looking behind the API in tests: the database rows, the Celery queues and users' histories."""

import json
import uuid
from typing import Any

import redis
from sqlalchemy import select

from app.db.session import create_sync_engine
from app.models import Task
from app.realtime.envelopes import history_key


def tasks_of(database_url: str, participant_id: str) -> list[Task]:
    """Every task row of a participant."""
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            rows = connection.execute(select(Task).where(Task.participant_id == uuid.UUID(participant_id)))
            return list(rows)  # type: ignore[arg-type]
    finally:
        engine.dispose()


def all_task_ids(database_url: str) -> set[str]:
    """The id of every task row, whoever it belongs to."""
    engine = create_sync_engine(database_url)
    try:
        with engine.connect() as connection:
            return {str(task_id) for task_id in connection.scalars(select(Task.task_id))}
    finally:
        engine.dispose()


def queued_messages(redis_url: str, queue: str = "chat") -> list[str]:
    """The task ids of the Celery messages waiting in a queue."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [json.loads(raw)["headers"]["id"] for raw in client.lrange(queue, 0, -1)]
    finally:
        client.close()


def history_of(redis_url: str, participant_id: str) -> list[dict[str, Any]]:
    """Every envelope in a participant's history, oldest first."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        return [
            {"id": entry_id, **json.loads(fields["e"])}
            for entry_id, fields in client.xrange(history_key(participant_id))
        ]
    finally:
        client.close()
