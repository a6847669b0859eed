"""Submissions: accepting code for grading (API side) and grading it in the sandbox (worker side)."""

import uuid

from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session

from app.core.errors import NotFound
from app.exercises.repository import all_exercises
from app.exercises.schemas import CodeFiles
from app.models import TaskKind, TaskState
from app.realtime.envelopes import EnvelopeType
from app.submissions import repository
from app.submissions.schemas import ExerciseProgress, SubmissionRequest
from app.tasks import service as tasks_service
from app.tasks.dispatch import TaskDispatcher
from app.worker.progress import TaskRun, execute
from app.worker.resources import WorkerResources
from app.worker.retry import PermanentError


async def submit(
    session: AsyncSession,
    participant_id: uuid.UUID,
    request: SubmissionRequest,
    dispatcher: TaskDispatcher,
    *,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    """Store the submission and its task, commit, then enqueue grading; 404 for an unknown exercise."""
    if request.exercise_id not in all_exercises():
        raise NotFound(f"no exercise {request.exercise_id!r}", code="exercise_not_found")

    def store_submission(session: Session, task_id: uuid.UUID) -> None:
        repository.add_submission(
            session, task_id, participant_id, request.exercise_id, request.code.model_dump(mode="json")
        )

    return await tasks_service.accept(
        session,
        dispatcher,
        participant_id,
        TaskKind.SUBMISSION,
        request,
        idempotency_key=idempotency_key,
        also_write=store_submission,
    )


async def progress(session: AsyncSession, participant_id: uuid.UUID) -> list[ExerciseProgress]:
    """The caller's attempts and best result per exercise."""
    rows = await session.run_sync(repository.summary_by_exercise, participant_id)
    return [ExerciseProgress(exercise_id=e, attempts=a, passed=p) for e, a, p in rows]


async def grade(resources: WorkerResources, task_id: uuid.UUID) -> None:
    """Grade one submission in the sandbox, streaming progress, then store and publish the result."""
    await execute(resources, task_id, lambda run: _grade(resources, run), result_type=EnvelopeType.SUBMISSION_RESULT)


async def _grade(resources: WorkerResources, run: TaskRun) -> None:
    submitted = SubmissionRequest.model_validate(run.task.input)
    exercise = all_exercises().get(submitted.exercise_id)
    if exercise is None:
        raise PermanentError("exercise_not_found", f"the exercise {submitted.exercise_id!r} no longer exists")

    def report(stage: str, message: str, fraction: float) -> None:
        run.progress(EnvelopeType.SUBMISSION_PROGRESS, stage, message, fraction)

    code = CodeFiles.model_validate(submitted.code.model_dump())
    result = (await resources.sandbox.grade(exercise, code, report)).as_result()

    def store_grade(session: Session) -> None:
        repository.record_grade(session, run.task.task_id, result)

    # Graded is success, whether or not the learner's code passed.
    run.finish(EnvelopeType.SUBMISSION_RESULT, TaskState.SUCCESS, result, also_write=store_grade)
