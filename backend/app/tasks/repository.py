"""SQL for tasks. Never commits; every read for a client filters by owner."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from app.db.base import table_of, utcnow
from app.models import TERMINAL_STATES, Task, TaskState

_RUNNING = (TaskState.STARTED, TaskState.PROGRESS)
_NOT_TERMINAL = (TaskState.QUEUED, *_RUNNING)


def add_task(
    session: Session,
    participant_id: uuid.UUID,
    kind: str,
    task_input: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> uuid.UUID:
    """Insert a QUEUED task and return its id (a Core insert: this is on every submit's hot path)."""
    task_id = uuid.uuid4()
    session.execute(
        insert(table_of(Task)).values(
            task_id=task_id,
            participant_id=participant_id,
            kind=kind,
            state=TaskState.QUEUED,
            input=task_input,
            idempotency_key=idempotency_key,
            request_hash=request_hash,
        )
    )
    return task_id


def get_owned(session: Session, task_id: uuid.UUID, participant_id: uuid.UUID) -> Task | None:
    return session.scalar(select(Task).where(Task.task_id == task_id, Task.participant_id == participant_id))


def get(session: Session, task_id: uuid.UUID) -> Task | None:
    return session.get(Task, task_id, populate_existing=True)


def list_owned(
    session: Session, participant_id: uuid.UUID, *, state: str | None, kind: str | None, limit: int
) -> list[Task]:
    query = select(Task).where(Task.participant_id == participant_id)
    if state is not None:
        query = query.where(Task.state == state)
    if kind is not None:
        query = query.where(Task.kind == kind)
    return list(session.scalars(query.order_by(Task.created_at.desc(), Task.task_id).limit(limit)))


def get_by_idempotency_key(session: Session, participant_id: uuid.UUID, key: str) -> Task | None:
    return session.scalar(select(Task).where(Task.participant_id == participant_id, Task.idempotency_key == key))


def forget_idempotency_key(session: Session, task_id: uuid.UUID) -> None:
    """Free an expired key for reuse (the unique constraint covers all rows)."""
    session.execute(update(Task).where(Task.task_id == task_id).values(idempotency_key=None))


@dataclass(frozen=True)
class ClaimedTask:
    """What an execution needs of the task it has just claimed."""

    task_id: uuid.UUID
    participant_id: uuid.UUID
    kind: str
    input: dict[str, Any]
    created_at: datetime
    resumed: bool  # an earlier execution claimed it first


def claim(
    session: Session, task_id: uuid.UUID, attempt: int, *, last_event_id: str | None = None
) -> ClaimedTask | None:
    """Mark the task STARTED by the execution holding fencing token `attempt`; None when it is missing or finished.

    `last_event_id` is the id the execution's `task_status STARTED` envelope is about to get.
    """
    row = session.execute(
        select(Task.participant_id, Task.kind, Task.input, Task.created_at, Task.attempt, Task.state).where(
            Task.task_id == task_id
        )
    ).one_or_none()
    if row is None or TaskState(row.state).is_terminal:
        return None
    claimed = session.execute(
        update(Task)
        .where(Task.task_id == task_id, Task.state.in_([str(s) for s in _NOT_TERMINAL]))
        .values(
            state=TaskState.STARTED,
            attempt=attempt,
            started_at=func.coalesce(Task.started_at, utcnow()),
            stage="started",
            last_event_id=last_event_id,
        )
    )
    if not claimed.rowcount:  # type: ignore[attr-defined]
        return None
    return ClaimedTask(task_id, row.participant_id, row.kind, row.input, row.created_at, resumed=row.attempt > 0)


def record_progress(session: Session, task_id: uuid.UUID, attempt: int, stage: str, progress: float) -> None:
    session.execute(
        update(Task)
        .where(Task.task_id == task_id, Task.attempt == attempt, Task.state.in_([str(s) for s in _RUNNING]))
        .values(state=TaskState.PROGRESS, stage=stage[:64], progress=progress)
    )


def finish(
    session: Session,
    task_id: uuid.UUID,
    state: TaskState,
    *,
    result: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
    attempt: int | None = None,
    finished_at: datetime | None = None,
    last_event_id: str | None = None,
) -> bool:
    """Write the terminal state once; False (and nothing written) when the task already has one.

    With `attempt`, only the execution holding that fencing token may write it. `last_event_id`
    is the id the terminal envelope is about to be published with.
    """
    assert state.is_terminal
    query = update(Task).where(Task.task_id == task_id, Task.state.not_in([str(s) for s in TERMINAL_STATES]))
    if attempt is not None:
        query = query.where(Task.attempt == attempt)
    outcome = session.execute(
        query.values(
            state=state,
            result=result,
            error=error,
            progress=1.0 if state == TaskState.SUCCESS else Task.progress,
            stage="done" if state == TaskState.SUCCESS else str(state).lower(),
            finished_at=finished_at or utcnow(),
            **({"last_event_id": last_event_id} if last_event_id is not None else {}),
        )
    )
    return bool(outcome.rowcount)  # type: ignore[attr-defined]


def set_last_event_id(session: Session, task_id: uuid.UUID, event_id: str) -> None:
    session.execute(update(Task).where(Task.task_id == task_id).values(last_event_id=event_id))


def running_started_before(session: Session, cutoff: datetime, limit: int = 500) -> list[uuid.UUID]:
    """Tasks marked running whose execution began before `cutoff` (their leases are checked next)."""
    query = select(Task.task_id).where(Task.state.in_([str(s) for s in _RUNNING]), Task.started_at < cutoff)
    return list(session.scalars(query.limit(limit)))


def requeue(session: Session, task_id: uuid.UUID) -> bool:
    """Running → QUEUED, for a task whose execution died; False if it moved on meanwhile."""
    result = session.execute(
        update(Task)
        .where(Task.task_id == task_id, Task.state.in_([str(s) for s in _RUNNING]))
        .values(state=TaskState.QUEUED, stage="requeued")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def queued_before(session: Session, cutoff: datetime, limit: int = 500) -> list[tuple[uuid.UUID, str]]:
    """QUEUED tasks last touched before `cutoff`, with their kinds."""
    query = select(Task.task_id, Task.kind).where(Task.state == TaskState.QUEUED, Task.updated_at < cutoff)
    return [(row.task_id, row.kind) for row in session.execute(query.limit(limit))]


def queued_among(session: Session, task_ids: list[uuid.UUID]) -> list[tuple[uuid.UUID, str]]:
    """Which of `task_ids` are QUEUED, with their kinds."""
    query = select(Task.task_id, Task.kind).where(Task.state == TaskState.QUEUED, Task.task_id.in_(task_ids))
    return [(row.task_id, row.kind) for row in session.execute(query)]
