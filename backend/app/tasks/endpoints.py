from typing import Annotated

from fastapi import APIRouter, Query, status

from app.core.errors import Conflict, NotAuthenticated, NotFound, error_responses
from app.deps import CurrentParticipant, DispatcherDep, PublisherDep, RedisDep, SessionDep
from app.models import TaskKind, TaskState
from app.tasks import service
from app.tasks.schemas import TaskStatus

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


@router.get("", response_model=list[TaskStatus], responses=error_responses(NotAuthenticated))
async def list_tasks(
    participant_id: CurrentParticipant,
    session: SessionDep,
    state: TaskState | None = None,
    kind: TaskKind | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[TaskStatus]:
    """The caller's most recent tasks, newest first, optionally by state and kind."""
    return await service.list_statuses(session, participant_id, state=state, kind=kind, limit=limit)


@router.get("/{task_id}", response_model=TaskStatus, responses=error_responses(NotAuthenticated, NotFound))
async def get_task(task_id: str, participant_id: CurrentParticipant, session: SessionDep) -> TaskStatus:
    """One of the caller's tasks, as the database knows it; 404 for unknown or foreign ids."""
    return await service.get_status(session, task_id, participant_id)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskStatus,
    responses=error_responses(NotAuthenticated, NotFound, Conflict),
)
async def cancel_task(
    task_id: str,
    participant_id: CurrentParticipant,
    session: SessionDep,
    redis: RedisDep,
    publisher: PublisherDep,
    dispatcher: DispatcherDep,
) -> TaskStatus:
    """Cancel a queued or running task; a running one stops at its next checkpoint. 409 if it already ended."""
    return await service.cancel(session, redis, publisher, dispatcher, task_id, participant_id)
