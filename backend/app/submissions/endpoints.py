import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response, status

from app.core.errors import Conflict, NotAuthenticated, NotFound, ServiceUnavailable, error_responses
from app.core.rate_limit import RateLimited
from app.deps import (
    CurrentParticipant,
    DatabaseDep,
    DispatcherDep,
    IdempotencyKey,
    RegistryDep,
    SessionDep,
    SettingsDep,
    admitted_submitter,
)
from app.submissions import service
from app.submissions.schemas import ExerciseProgress, LatestSubmission, SubmissionRequest
from app.submissions.tasks import SUBMISSION
from app.tasks.schemas import TaskAccepted

router = APIRouter(tags=["submissions"])


@router.post(
    "/submit-test2",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TaskAccepted,
    responses=error_responses(NotAuthenticated, NotFound, Conflict, RateLimited, ServiceUnavailable),
)
async def submit_code(
    request: SubmissionRequest,
    participant_id: Annotated[uuid.UUID, Depends(admitted_submitter(SUBMISSION))],
    db: DatabaseDep,
    dispatcher: DispatcherDep,
    response: Response,
    settings: SettingsDep,
    idempotency_key: IdempotencyKey = None,
) -> TaskAccepted:
    """Grade code against an exercise; progress streams as `submission_progress`, then `submission_result`."""
    task_id = await service.submit(
        db,
        participant_id,
        request,
        dispatcher,
        max_in_flight=settings.submission_max_in_flight,
        idempotency_key=idempotency_key,
    )
    return TaskAccepted.for_task(task_id, response)


@router.get(
    "/api/submissions/progress", response_model=list[ExerciseProgress], responses=error_responses(NotAuthenticated)
)
async def submission_progress(participant_id: CurrentParticipant, session: SessionDep) -> list[ExerciseProgress]:
    """The caller's attempts and best result per exercise (for the dashboard)."""
    return await service.progress(session, participant_id)


@router.get(
    "/api/submissions/latest",
    response_model=LatestSubmission,
    responses=error_responses(NotAuthenticated),
)
async def latest_submission(
    participant_id: CurrentParticipant,
    session: SessionDep,
    registry: RegistryDep,
    exercise_id: Annotated[str, Query(min_length=1, max_length=64, pattern=r"^[a-z0-9-]+$")],
) -> LatestSubmission:
    """The caller's most recent submission for an exercise (for showing its result again after a reload)."""
    return await service.latest(session, registry, participant_id, exercise_id)
