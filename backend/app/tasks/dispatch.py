"""Handing committed tasks to Celery, and knowing which ones the broker should still hold."""

import asyncio
import time
import uuid

import redis
import redis.asyncio as aioredis
from anyio import to_thread
from celery import Celery

from app.core.errors import ServiceUnavailable
from app.models import TaskKind
from app.tasks.broker_message import celery_message
from app.worker.celery_app import CHAT_QUEUE, SUBMISSIONS_QUEUE

# Task ids handed to the broker and not yet picked up by a worker. It lives in the broker's
# Redis, so whatever the broker loses (a restart without persistence) this loses too: a
# QUEUED task missing from it is one no worker will ever receive, and is dispatched again.
DISPATCHED_KEY = "taskwire:dispatched"

TASK_NAMES: dict[str, str] = {TaskKind.CHAT: "chat.reply", TaskKind.SUBMISSION: "submissions.grade"}
TASK_QUEUES: dict[str, str] = {TaskKind.CHAT: CHAT_QUEUE, TaskKind.SUBMISSION: SUBMISSIONS_QUEUE}

RETRY_AFTER_S = "5"


def queue_unavailable() -> ServiceUnavailable:
    """The 503 a submit gets when the broker cannot take work."""
    return ServiceUnavailable(
        "the task queue is unavailable, try again shortly",
        code="queue_unavailable",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def send_to_broker(app: Celery, kind: str, task_id: str) -> None:
    """Publish the Celery message for a task (blocking); fails within about a second."""
    app.send_task(
        TASK_NAMES[kind],
        args=[task_id],
        task_id=task_id,
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    )


def dispatch_sync(app: Celery, client: redis.Redis, kind: str, task_id: str) -> None:
    """Record and enqueue a task from a synchronous process (the reconciler)."""
    client.zadd(DISPATCHED_KEY, {task_id: time.time()})
    send_to_broker(app, kind, task_id)


class TaskDispatcher:
    """Enqueues tasks by id (never an object) from the API, with the task id as the Celery id."""

    def __init__(self, app: Celery, client: aioredis.Redis):
        self._app = app
        self._redis = client

    async def enqueue(self, kind: str, task_id: uuid.UUID) -> None:
        """Record the task as dispatched and push its Celery message, atomically and in one round trip."""
        message = celery_message(self._app, TASK_NAMES[kind], str(task_id), TASK_QUEUES[kind])
        async with asyncio.timeout(1), self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(DISPATCHED_KEY, {str(task_id): time.time()})
            pipe.lpush(TASK_QUEUES[kind], message)
            await pipe.execute()

    async def revoke(self, task_id: uuid.UUID) -> None:
        """Ask workers to discard the task's message if they still hold it (best effort)."""
        await to_thread.run_sync(lambda: self._app.control.revoke(str(task_id)))
