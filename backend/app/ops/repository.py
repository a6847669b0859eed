"""SQL for the ops overview. Never commits; reads across all users (callers are admins only)."""

import uuid
from datetime import datetime

from sqlalchemy import RowMapping, func, select
from sqlalchemy.orm import Session

from app.models import Task, TaskState, User

_NOT_TERMINAL = (TaskState.QUEUED, TaskState.STARTED, TaskState.PROGRESS)


# A task as the ops page lists it (app/ops/schemas.py TaskLine).
_LINE = (Task.task_id, Task.kind, Task.state, User.username, Task.created_at, Task.finished_at, Task.error)


def counts_since(session: Session, since: datetime) -> list[tuple[str, str, int]]:
    """(kind, state, count) of the tasks created since `since` (ix_tasks_created_at keeps it to that window)."""
    query = select(Task.kind, Task.state, func.count()).where(Task.created_at >= since).group_by(Task.kind, Task.state)
    return [(kind, state, int(count)) for kind, state, count in session.execute(query)]


def latest_failures(session: Session, limit: int) -> list[RowMapping]:
    """The most recently failed tasks, newest first."""
    query = (
        select(*_LINE)
        .join(User, User.participant_id == Task.participant_id)
        .where(Task.state == TaskState.FAILURE)
        .order_by(Task.updated_at.desc())
        .limit(limit)
    )
    return list(session.execute(query).mappings())


def unfinished(session: Session, limit: int) -> list[RowMapping]:
    """Queued and running tasks, oldest first: the ones an operator may have to cancel."""
    query = (
        select(*_LINE)
        .join(User, User.participant_id == Task.participant_id)
        .where(Task.state.in_(_NOT_TERMINAL))
        .order_by(Task.created_at)
        .limit(limit)
    )
    return list(session.execute(query).mappings())


def username_of(session: Session, participant_id: uuid.UUID) -> str | None:
    return session.scalar(select(User.username).where(User.participant_id == participant_id))


def operator_ids(session: Session) -> list[uuid.UUID]:
    """Every operator account's participant id."""
    return list(session.scalars(select(User.participant_id).where(User.is_operator)))


def is_operator(session: Session, participant_id: uuid.UUID) -> bool:
    """Whether this account is an operator's."""
    return bool(session.scalar(select(User.is_operator).where(User.participant_id == participant_id)))
