"""Handing committed tasks to Celery, and knowing which ones the broker should still hold."""

import asyncio
import time
import uuid

import redis
import redis.asyncio as aioredis
from anyio import to_thread
from celery import Celery

from app.core.errors import ServiceUnavailable
from app.tasks.broker_message import celery_message
from app.tasks.keys import DISPATCHED_KEY
from app.tasks.registry import TaskRegistry
from app.tasks.repository import TaskRef

RETRY_AFTER_S = "5"


def queue_unavailable() -> ServiceUnavailable:
    """The 503 a submit gets when the broker cannot take work."""
    return ServiceUnavailable(
        "the task queue is unavailable, try again shortly",
        code="queue_unavailable",
        headers={"Retry-After": RETRY_AFTER_S},
    )


def dispatch_sync(app: Celery, client: redis.Redis, registry: TaskRegistry, task: TaskRef) -> None:
    """Record and enqueue a task from a synchronous process (the reconciler); fails within about a second."""
    task_id = task.task_id
    client.zadd(DISPATCHED_KEY, {str(task_id): time.time()})
    app.send_task(
        registry[task.kind].task_name,
        args=[str(task_id), str(task.participant_id)],
        task_id=str(task_id),
        retry=True,
        retry_policy={"max_retries": 1, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.2},
    )


class TaskDispatcher:
    """Enqueues tasks by id (never an object) from the API, with the task id as the Celery id."""

    def __init__(self, app: Celery, client: aioredis.Redis, registry: TaskRegistry):
        self._app = app
        self._redis = client
        self._registry = registry

    @property
    def registry(self) -> TaskRegistry:
        """The kinds this dispatcher sends."""
        return self._registry

    async def enqueue(self, task: TaskRef) -> None:
        """Record the task as dispatched and push its Celery message, atomically and in one round trip.

        The message carries the task's user too: a worker takes the task's lease, which lives
        beside the user's history (`keys.lease_key`), before it reads the task's row.
        """
        spec, task_id = self._registry[task.kind], task.task_id
        message = celery_message(self._app, spec.task_name, str(task_id), str(task.participant_id), spec.queue)
        async with asyncio.timeout(1), self._redis.pipeline(transaction=True) as pipe:
            pipe.zadd(DISPATCHED_KEY, {str(task_id): time.time()})
            pipe.lpush(spec.queue, message)
            await pipe.execute()

    async def revoke(self, task_id: uuid.UUID) -> None:
        """Ask workers to discard the task's message if they still hold it (best effort)."""
        await to_thread.run_sync(lambda: self._app.control.revoke(str(task_id)))
