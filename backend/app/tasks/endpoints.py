import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, status

from app.core.errors import Conflict, NotAuthenticated, NotFound, error_responses
from app.deps import CurrentParticipant, DispatcherDep, PublisherDep, RedisDep, RegistryDep, SessionDep
from app.models import TaskState
from app.tasks import service
from app.tasks.schemas import TaskStatus

router = APIRouter(prefix="/api/tasks", tags=["tasks"])


async def _task_id(
    task_id: Annotated[str, Path(description="the id from the 202, in any case, hyphens optional")],
) -> uuid.UUID:
    return service.parse_task_id(task_id)


# Parsed once, here: past this point a task id is a UUID, so every key and query spells it the same.
TaskIdPath = Annotated[uuid.UUID, Depends(_task_id)]


@router.get("", response_model=list[TaskStatus], responses=error_responses(NotAuthenticated))
async def list_tasks(
    participant_id: CurrentParticipant,
    session: SessionDep,
    registry: RegistryDep,
    state: TaskState | None = None,
    kind: Annotated[
        str | None, Query(max_length=32, pattern=r"^[a-z_]+$", description="a task kind, e.g. chat")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[TaskStatus]:
    """The caller's most recent tasks, newest first, optionally by state and kind."""
    return await service.list_statuses(session, registry, participant_id, state=state, kind=kind, limit=limit)


@router.get("/{task_id}", response_model=TaskStatus, responses=error_responses(NotAuthenticated, NotFound))
async def get_task(
    participant_id: CurrentParticipant, task_id: TaskIdPath, session: SessionDep, registry: RegistryDep
) -> TaskStatus:
    """One of the caller's tasks, as the database knows it; 404 for unknown or foreign ids."""
    return await service.get_status(session, registry, task_id, participant_id)


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskStatus,
    responses=error_responses(NotAuthenticated, NotFound, Conflict),
)
async def cancel_task(
    participant_id: CurrentParticipant,
    task_id: TaskIdPath,
    session: SessionDep,
    redis: RedisDep,
    publisher: PublisherDep,
    dispatcher: DispatcherDep,
) -> TaskStatus:
    """Cancel a queued or running task; a running one stops within moments. 409 if it already ended."""
    return await service.cancel(session, redis, publisher, dispatcher, task_id, participant_id)
