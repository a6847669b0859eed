import uuid
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Depends, status
from fastapi.responses import FileResponse

from app.core.errors import Conflict, Forbidden, NotAuthenticated, NotFound, error_responses
from app.deps import (
    BrokerDep,
    CurrentParticipant,
    DispatcherDep,
    PublisherDep,
    RedisDep,
    RegistryDep,
    SessionDep,
)
from app.ops import service
from app.ops.schemas import Overview
from app.tasks import service as tasks_service
from app.tasks.endpoints import TaskIdPath
from app.tasks.schemas import TaskStatus

router = APIRouter(prefix="/api/ops", tags=["ops"])
page_router = APIRouter(include_in_schema=False)
_PAGE = Path(__file__).resolve().parents[3] / "frontend" / "ops.html"


async def _admin(participant_id: CurrentParticipant, session: SessionDep) -> uuid.UUID:
    if not await service.is_admin(session, participant_id):
        raise Forbidden("the ops pages are for operators (`taskwire admin add <username>`)")
    return participant_id


Admin = Annotated[uuid.UUID, Depends(_admin)]
_ADMIN_ERRORS = (NotAuthenticated, Forbidden)


@router.get("/overview", response_model=Overview, responses=error_responses(*_ADMIN_ERRORS))
async def get_overview(
    _: Admin, session: SessionDep, redis: RedisDep, broker: BrokerDep, registry: RegistryDep
) -> Overview:
    """What the system is doing now: queues, workers, replicas, the last hour's tasks, latency, failures."""
    return await service.overview(session, redis, registry, broker=broker)


@router.delete(
    "/tasks/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskStatus,
    responses=error_responses(*_ADMIN_ERRORS, NotFound, Conflict),
)
async def cancel_any_task(
    _: Admin,
    task_id: TaskIdPath,
    session: SessionDep,
    redis: RedisDep,
    publisher: PublisherDep,
    dispatcher: DispatcherDep,
) -> TaskStatus:
    """Cancel anyone's queued or running task (its owner's tabs are told at once). 409 if it already ended."""
    return await tasks_service.cancel(session, redis, publisher, dispatcher, task_id, None)


@page_router.get("/ops")
async def ops_page() -> FileResponse:
    """The ops page (it asks for an operator's sign-in itself: pages carry no credentials)."""
    return FileResponse(_PAGE)
