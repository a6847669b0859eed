"""The task lifecycle on the API side: accepting work once, reading it back, cancelling it."""

import hashlib
import json
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta

import redis.asyncio as aioredis
from pydantic import BaseModel
from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import Conflict, NotFound
from app.db.base import utcnow
from app.db.threaded import ThreadedDatabase
from app.metrics import shared as shared_metrics
from app.metrics.registry import tasks_submitted
from app.models import TaskState
from app.realtime.envelopes import EnvelopeType, id_ahead
from app.realtime.publisher import AsyncEnvelopePublisher
from app.tasks import repository
from app.tasks.dispatch import TaskDispatcher, queue_unavailable
from app.tasks.keys import cancel_key
from app.tasks.registry import TaskRegistry
from app.tasks.repository import TaskRef
from app.tasks.schemas import TaskStatus

logger = logging.getLogger(__name__)

IDEMPOTENCY_WINDOW = timedelta(hours=24)
_CANCEL_FLAG_TTL_S = 7 * 24 * 3600
# As in tasks/runner.py: the CANCELLED envelope's id is recorded in the same commit as the state.
CANCEL_ID_HEADROOM_MS = 500


def _not_found() -> NotFound:
    return NotFound("no such task", code="task_not_found")


def parse_task_id(task_id: str) -> uuid.UUID:
    """A task id as clients may spell it (any case, with or without hyphens); a malformed one is a 404."""
    try:
        return uuid.UUID(task_id)
    except ValueError:
        raise _not_found() from None


def request_fingerprint(kind: str, payload: BaseModel) -> str:
    """A stable hash of a submit request, to tell a retried request from a different one."""
    canonical = json.dumps([kind, payload.model_dump(mode="json")], sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


async def accept(
    db: ThreadedDatabase,
    dispatcher: TaskDispatcher,
    participant_id: uuid.UUID,
    kind: str,
    payload: BaseModel,
    *,
    idempotency_key: str | None,
    also_write: Callable[[Connection, uuid.UUID], None] | None = None,
) -> uuid.UUID:
    """Accept a submission once: store it, commit, then enqueue; returns the task id.

    The whole transaction is one hop to a database thread, on a Core connection: this runs on
    every submit, and through the async session it cost three times the CPU (docs/scaling.md).

    The same `Idempotency-Key` (per user, 24 h) with the same body returns the first task and
    enqueues nothing; with another body it is a 409. Callers come through `SubmitAdmission`
    (deps.py), which has just reached the broker's Redis or refused with a 503, so nothing is
    written while the broker is down or the queue is full.
    """
    fingerprint = request_fingerprint(kind, payload)

    def write(connection: Connection) -> tuple[uuid.UUID, bool]:
        if idempotency_key is not None:
            earlier = repository.get_by_idempotency_key(connection, participant_id, idempotency_key)
            if earlier is not None and earlier.created_at > utcnow() - IDEMPOTENCY_WINDOW:
                if earlier.request_hash != fingerprint:
                    raise Conflict(
                        "this Idempotency-Key was used for a different request", code="idempotency_key_reused"
                    )
                return earlier.task_id, False
            if earlier is not None:
                repository.forget_idempotency_key(connection, earlier.task_id)
        task_id = repository.add_task(
            connection,
            participant_id,
            kind,
            payload.model_dump(mode="json"),
            idempotency_key=idempotency_key,
            request_hash=fingerprint,
        )
        if also_write is not None:
            also_write(connection, task_id)
        return task_id, True

    try:
        task_id, created = await db.write(write)
    except IntegrityError:
        # The same key raced in from a concurrent request: answer as the winner did.
        task_id, created = await db.write(write)
    if not created:
        return task_id
    tasks_submitted.labels(kind=kind).inc()
    try:
        await dispatcher.enqueue(TaskRef(task_id, kind, participant_id))
    except Exception as exc:
        # Committed but not enqueued: fail the row so it never sits QUEUED, and tell the client.
        logger.exception("could not enqueue task", extra={"task_id": str(task_id)})
        error = {"code": "enqueue_failed", "message": "the task queue is unavailable"}
        await db.write(repository.finish, task_id, TaskState.FAILURE, error=error)
        raise queue_unavailable() from exc
    return task_id


async def get_status(
    session: AsyncSession, registry: TaskRegistry, task_id: uuid.UUID, participant_id: uuid.UUID
) -> TaskStatus:
    """The caller's task; an unknown or another user's id are the same 404."""
    task = await session.run_sync(repository.get_owned, task_id, participant_id)
    if task is None:
        raise _not_found()
    return TaskStatus.of(task, registry)


async def list_statuses(
    session: AsyncSession,
    registry: TaskRegistry,
    participant_id: uuid.UUID,
    *,
    state: str | None,
    kind: str | None,
    limit: int,
) -> list[TaskStatus]:
    """The caller's most recent tasks, newest first."""
    tasks = await session.run_sync(repository.list_owned, participant_id, state=state, kind=kind, limit=limit)
    return [TaskStatus.of(task, registry) for task in tasks]


async def cancel(
    session: AsyncSession,
    redis: aioredis.Redis,
    publisher: AsyncEnvelopePublisher,
    dispatcher: TaskDispatcher,
    task_id: uuid.UUID,
    participant_id: uuid.UUID | None,
) -> TaskStatus:
    """Cancel a queued or running task: CANCELLED once, one `task_status` envelope, nothing after it.

    `participant_id` is the owner the caller must be; None (an operator) cancels anyone's task.
    """
    if participant_id is None:
        task = await session.run_sync(repository.get, task_id)
    else:
        task = await session.run_sync(repository.get_owned, task_id, participant_id)
    if task is None:
        raise _not_found()
    owner, kind = task.participant_id, task.kind
    if TaskState(task.state).is_terminal:
        raise Conflict(f"the task already ended ({task.state})", code="task_finished")
    # The flag first: from now on the running execution's publishes are refused, so nothing
    # it sends can follow the CANCELLED envelope below.
    await redis.set(cancel_key(str(owner), task_id), "1", ex=_CANCEL_FLAG_TTL_S)
    event_id = id_ahead(task.last_event_id, headroom_ms=CANCEL_ID_HEADROOM_MS)
    cancelled = await session.run_sync(repository.finish, task_id, TaskState.CANCELLED, last_event_id=event_id)
    await session.commit()
    if not cancelled:
        raise Conflict("the task ended before it could be cancelled", code="task_finished")
    published_id = await publisher.publish(
        str(owner),
        EnvelopeType.TASK_STATUS,
        str(task_id),
        {"state": TaskState.CANCELLED},
        envelope_id=event_id,
        also=lambda pipe: shared_metrics.count_finished_in(pipe, kind, TaskState.CANCELLED),
    )
    if published_id != event_id:
        await session.run_sync(repository.set_last_event_id, task_id, published_id)
        await session.commit()
    try:
        await dispatcher.revoke(task_id)
    except Exception:
        logger.warning("revoke failed; the worker will skip the cancelled task anyway", exc_info=True)
    task = await session.run_sync(repository.get, task_id)
    return TaskStatus.of(task, dispatcher.registry)
