"""SQL for tasks. Never commits; every read for a client filters by owner."""

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import JSON, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from app.db.base import Executor, table_of, utcnow
from app.models import TERMINAL_STATES, Task, TaskState

_RUNNING = (TaskState.STARTED, TaskState.PROGRESS)
_NOT_TERMINAL = (TaskState.QUEUED, *_RUNNING)


_ADD_TASK = insert(table_of(Task))
_BY_IDEMPOTENCY_KEY = select(Task.task_id, Task.created_at, Task.request_hash).where(
    Task.participant_id == bindparam("pid"), Task.idempotency_key == bindparam("key")
)
_FORGET_IDEMPOTENCY_KEY = update(Task).where(Task.task_id == bindparam("tid")).values(idempotency_key=None)


class TaskRef(NamedTuple):
    """What it takes to hand a task to a worker: its id, its kind and its user."""

    task_id: uuid.UUID
    kind: str
    participant_id: uuid.UUID


class EarlierSubmit(NamedTuple):
    """The task an Idempotency-Key was first used for."""

    task_id: uuid.UUID
    created_at: datetime
    request_hash: str | None


def add_task(
    db: Executor,
    participant_id: uuid.UUID,
    kind: str,
    task_input: dict[str, Any],
    *,
    idempotency_key: str | None = None,
    request_hash: str | None = None,
) -> uuid.UUID:
    """Insert a QUEUED task and return its id (a prebuilt Core insert: this is on every submit's hot path)."""
    task_id = uuid.uuid4()
    db.execute(
        _ADD_TASK,
        {
            "task_id": task_id,
            "participant_id": participant_id,
            "kind": kind,
            "state": TaskState.QUEUED,
            "input": task_input,
            "idempotency_key": idempotency_key,
            "request_hash": request_hash,
        },
    )
    return task_id


def get_owned(session: Session, task_id: uuid.UUID, participant_id: uuid.UUID) -> Task | None:
    """The participant's task as the database has it now (never a copy the session loaded earlier)."""
    query = select(Task).where(Task.task_id == task_id, Task.participant_id == participant_id)
    return session.scalar(query.execution_options(populate_existing=True))


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


def get_by_idempotency_key(db: Executor, participant_id: uuid.UUID, key: str) -> EarlierSubmit | None:
    row = db.execute(_BY_IDEMPOTENCY_KEY, {"pid": participant_id, "key": key}).one_or_none()
    return EarlierSubmit(row.task_id, row.created_at, row.request_hash) if row is not None else None


def forget_idempotency_key(db: Executor, task_id: uuid.UUID) -> None:
    """Free an expired key for reuse (the unique constraint covers all rows)."""
    db.execute(_FORGET_IDEMPOTENCY_KEY, {"tid": task_id})


@dataclass(frozen=True)
class ClaimedTask:
    """What an execution needs of the task it has just claimed."""

    task_id: uuid.UUID
    participant_id: uuid.UUID
    kind: str
    input: dict[str, Any]
    created_at: datetime
    resumed: bool  # an earlier execution claimed it first


# Statements a worker runs for every task, built once: building them per call (and their cache
# keys) costs more CPU than running them.
_ACTIVE = [str(s) for s in _NOT_TERMINAL]
_JSON_OR_NULL = JSON(none_as_null=True)  # None is SQL NULL, as it was before there was a result
_TERMINAL = [str(s) for s in TERMINAL_STATES]
_CLAIM_READ = select(Task.participant_id, Task.kind, Task.input, Task.created_at, Task.attempt, Task.state).where(
    Task.task_id == bindparam("tid")
)
_CLAIM = (
    update(Task)
    .where(Task.task_id == bindparam("tid"), Task.state.in_(_ACTIVE))
    .values(
        state=TaskState.STARTED,
        attempt=bindparam("fence"),
        started_at=func.coalesce(Task.started_at, bindparam("now", type_=Task.started_at.type)),
        stage="started",
        last_event_id=bindparam("new_event_id"),
    )
)
_PROGRESS = (
    update(Task)
    .where(Task.task_id == bindparam("tid"), Task.attempt == bindparam("fence"))
    .where(Task.state.in_([str(s) for s in _RUNNING]))
    .values(state=TaskState.PROGRESS, stage=bindparam("new_stage"), progress=bindparam("new_progress"))
)
_FINISH = (
    update(Task)
    .where(Task.task_id == bindparam("tid"), Task.state.not_in(_TERMINAL))
    .values(
        state=bindparam("new_state"),
        result=bindparam("new_result", type_=_JSON_OR_NULL),
        error=bindparam("new_error", type_=_JSON_OR_NULL),
        progress=func.coalesce(bindparam("new_progress", type_=Task.progress.type), Task.progress),
        stage=bindparam("new_stage"),
        finished_at=bindparam("done_at"),
        last_event_id=func.coalesce(bindparam("new_event_id", type_=Task.last_event_id.type), Task.last_event_id),
    )
)
_FINISH_FENCED = _FINISH.where(Task.attempt == bindparam("fence"))
_SET_LAST_EVENT_ID = (
    update(Task).where(Task.task_id == bindparam("tid")).values(last_event_id=bindparam("new_event_id"))
)


def claim(db: Executor, task_id: uuid.UUID, attempt: int, *, last_event_id: str | None = None) -> ClaimedTask | None:
    """Mark the task STARTED by the execution holding fencing token `attempt`; None when it is missing or finished.

    `last_event_id` is the id the execution's `task_status STARTED` envelope is about to get.
    """
    row = db.execute(_CLAIM_READ, {"tid": task_id}).one_or_none()
    if row is None or TaskState(row.state).is_terminal:
        return None
    params = {"tid": task_id, "fence": attempt, "now": utcnow(), "new_event_id": last_event_id}
    if not db.execute(_CLAIM, params).rowcount:  # type: ignore[attr-defined]
        return None
    return ClaimedTask(task_id, row.participant_id, row.kind, row.input, row.created_at, resumed=row.attempt > 0)


def record_progress(db: Executor, task_id: uuid.UUID, attempt: int, stage: str, progress: float) -> None:
    db.execute(_PROGRESS, {"tid": task_id, "fence": attempt, "new_stage": stage[:64], "new_progress": progress})


def finish(
    db: Executor,
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
    params = {
        "tid": task_id,
        "new_state": state,
        "new_result": result,
        "new_error": error,
        "new_progress": 1.0 if state == TaskState.SUCCESS else None,
        "new_stage": "done" if state == TaskState.SUCCESS else str(state).lower(),
        "done_at": finished_at or utcnow(),
        "new_event_id": last_event_id,
    }
    if attempt is not None:
        params["fence"] = attempt
    outcome = db.execute(_FINISH if attempt is None else _FINISH_FENCED, params)
    return bool(outcome.rowcount)  # type: ignore[attr-defined]


def set_last_event_id(db: Executor, task_id: uuid.UUID, event_id: str) -> None:
    db.execute(_SET_LAST_EVENT_ID, {"tid": task_id, "new_event_id": event_id})


def participant_of(db: Executor, task_id: uuid.UUID) -> uuid.UUID | None:
    """The user a task belongs to, or None when there is no such task."""
    return db.execute(select(Task.participant_id).where(Task.task_id == task_id)).scalar_one_or_none()


def running_started_before(session: Session, cutoff: datetime, limit: int = 500) -> list[TaskRef]:
    """Tasks marked running whose execution began before `cutoff` (their leases are checked next)."""
    query = select(Task.task_id, Task.kind, Task.participant_id).where(
        Task.state.in_([str(s) for s in _RUNNING]), Task.started_at < cutoff
    )
    return [TaskRef(*row) for row in session.execute(query.limit(limit))]


def requeue(session: Session, task_id: uuid.UUID) -> bool:
    """Running → QUEUED, for a task whose execution died; False if it moved on meanwhile."""
    result = session.execute(
        update(Task)
        .where(Task.task_id == task_id, Task.state.in_([str(s) for s in _RUNNING]))
        .values(state=TaskState.QUEUED, stage="requeued")
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def queued_before(session: Session, cutoff: datetime, limit: int = 500) -> list[TaskRef]:
    """QUEUED tasks last touched before `cutoff`."""
    query = select(Task.task_id, Task.kind, Task.participant_id).where(
        Task.state == TaskState.QUEUED, Task.updated_at < cutoff
    )
    return [TaskRef(*row) for row in session.execute(query.limit(limit))]


def queued_among(session: Session, task_ids: list[uuid.UUID]) -> list[TaskRef]:
    """Which of `task_ids` are QUEUED."""
    query = select(Task.task_id, Task.kind, Task.participant_id).where(
        Task.state == TaskState.QUEUED, Task.task_id.in_(task_ids)
    )
    return [TaskRef(*row) for row in session.execute(query)]
