"""The ops overview: queues, workers, replicas, the last hour's tasks, latency and failures, in one read."""

import time
import uuid
from datetime import timedelta
from typing import Any

import redis.asyncio as aioredis
from sqlalchemy.ext.asyncio import AsyncSession

from app.db.base import utcnow
from app.metrics import latency
from app.ops import repository
from app.ops.presence import REPLICAS_KEY, WORKERS_KEY, read_alive
from app.ops.schemas import KindHealth, Overview, QueueDepth, TaskLine
from app.tasks.broker_message import task_id_of_queued
from app.tasks.keys import DISPATCHED_KEY
from app.tasks.registry import TaskRegistry

LIST_LIMIT = 20


async def is_admin(session: AsyncSession, participant_id: uuid.UUID) -> bool:
    """Whether the participant's account is an operator's (`taskwire admin add`)."""
    return await session.run_sync(repository.is_operator, participant_id)


async def queue_depths(client: aioredis.Redis, registry: TaskRegistry) -> list[QueueDepth]:
    """Each queue's backlog and its oldest message's dispatch time (Celery's Redis transport
    pushes on the left and workers pop on the right, so the oldest is the last element)."""
    queues = registry.queues
    async with client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue)
            pipe.lindex(queue, -1)
        replies = await pipe.execute()
    oldest_ids = [task_id_of_queued(raw) if raw else None for raw in replies[1::2]]
    known = [task_id for task_id in oldest_ids if task_id]
    scores = dict(zip(known, await client.zmscore(DISPATCHED_KEY, known), strict=True)) if known else {}
    return [
        QueueDepth(queue=queue, backlog=int(backlog), oldest_enqueued_at=scores.get(task_id) if task_id else None)
        for queue, backlog, task_id in zip(queues, replies[::2], oldest_ids, strict=True)
    ]


def kinds_health(workers: list[dict[str, Any]], registry: TaskRegistry) -> dict[str, KindHealth]:
    """Per kind: can any live worker do it, and how many slots they have and use."""
    health = {}
    for kind in registry:
        serving = [entry["kinds"][kind.name] for entry in workers if kind.name in entry.get("kinds", {})]
        able = [state for state in serving if not state.get("unavailable")]
        if not serving:
            reason = f"no worker is taking the {kind.queue} queue"
        elif not able:
            reason = serving[0]["unavailable"]
        else:
            reason = None
        health[kind.name] = KindHealth(
            queue=kind.queue,
            available=bool(able),
            reason=reason,
            workers=len(serving),
            slots=sum(int(state.get("slots", 0)) for state in able),
            running=sum(int(state.get("running", 0)) for state in serving),
        )
    return health


async def task_kinds_health(client: aioredis.Redis, registry: TaskRegistry) -> dict[str, KindHealth]:
    """kinds_health of the workers alive now (what /readyz reports)."""
    return kinds_health(await read_alive(client, WORKERS_KEY), registry)


async def overview(
    session: AsyncSession, client: aioredis.Redis, registry: TaskRegistry, *, broker: aioredis.Redis | None = None
) -> Overview:
    """Everything the ops page shows, read now: `client` is the bus Redis, `broker` Celery's (the
    same one unless BUS_REDIS_URL is set)."""
    workers = await read_alive(client, WORKERS_KEY)
    replicas = await read_alive(client, REPLICAS_KEY)
    counts = await session.run_sync(repository.counts_since, utcnow() - timedelta(hours=1))
    tasks_last_hour: dict[str, dict[str, int]] = {kind: {} for kind in registry.names}
    for kind, state, count in counts:
        tasks_last_hour.setdefault(kind, {})[state] = count
    failures = await session.run_sync(repository.latest_failures, LIST_LIMIT)
    unfinished = await session.run_sync(repository.unfinished, LIST_LIMIT)
    return Overview(
        generated_at=time.time(),
        queues=await queue_depths(broker or client, registry),
        kinds=kinds_health(workers, registry),
        workers=workers,
        replicas=replicas,
        tasks_last_hour=tasks_last_hour,
        latency=await latency.recent_percentiles(client, registry.names),
        failures=[TaskLine.model_validate(dict(line)) for line in failures],
        unfinished=[TaskLine.model_validate(dict(line)) for line in unfinished],
    )
