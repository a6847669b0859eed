import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel


class QueueDepth(BaseModel):
    """A broker queue: messages no worker has taken yet, and since when the oldest waits."""

    queue: str
    backlog: int
    oldest_enqueued_at: float | None  # epoch seconds; the page shows the age


class KindHealth(BaseModel):
    """Whether live workers can do a kind of task now, and how busy they are with it."""

    queue: str
    available: bool
    reason: str | None  # why not, in an operator's words
    workers: int
    slots: int
    running: int  # deliveries in workers now (past `slots`, some wait for a slot)


class TaskLine(BaseModel):
    """A task as the ops page lists it."""

    task_id: uuid.UUID
    kind: str
    state: str
    username: str
    created_at: datetime
    finished_at: datetime | None
    error: dict[str, Any] | None


class Overview(BaseModel):
    """What the system is doing now (GET /api/ops/overview, and the `ops_overview` envelope's data)."""

    generated_at: float
    queues: list[QueueDepth]
    kinds: dict[str, KindHealth]
    workers: list[dict[str, Any]]  # heartbeat entries (app/ops/presence.py)
    replicas: list[dict[str, Any]]
    tasks_last_hour: dict[str, dict[str, int]]  # kind → state → count
    latency: dict[str, dict[str, dict[str, float | None]]]  # kind → first|result → count, p50, p95, p99
    failures: list[TaskLine]
    unfinished: list[TaskLine]
