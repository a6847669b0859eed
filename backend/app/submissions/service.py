"""Submissions on the API side: accepting code for grading, and the learner's record per exercise.

Grading itself is the worker's: submissions/handler.py."""

import uuid

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from app.core.errors import NotFound
from app.core.rate_limit import RateLimited
from app.db.threaded import ThreadedDatabase
from app.exercises.repository import all_exercises
from app.submissions import repository
from app.submissions.schemas import ExerciseProgress, LatestSubmission, SubmissionRequest
from app.submissions.tasks import SUBMISSION
from app.tasks import service as tasks_service
from app.tasks.dispatch import TaskDispatcher
from app.tasks.registry import TaskRegistry


class TooManyInFlight(RateLimited):
    code = "too_many_in_flight"


async def submit(
    db: ThreadedDatabase,
    participant_id: uuid.UUID,
    request: SubmissionRequest,
    dispatcher: TaskDispatcher,
    *,
    max_in_flight: int,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    """Store the submission and its task, commit, then enqueue grading.

    404 for an unknown exercise; 429 `too_many_in_flight` while `max_in_flight` of the learner's
    submissions wait for their grade.
    """
    if request.exercise_id not in all_exercises():
        raise NotFound(f"no exercise {request.exercise_id!r}", code="exercise_not_found")

    def store_submission(connection: Connection, task_id: uuid.UUID) -> None:
        # Counted in the submit's own transaction: a learner cannot queue enough gradings to hold
        # every worker slot while each waits for its turn in the sandbox (sandbox.py). The count
        # includes this submission's own task, written just before.
        if repository.in_flight(connection, participant_id, SUBMISSION.name) > max_in_flight:
            raise TooManyInFlight(
                f"you already have {max_in_flight} submissions being graded; wait for a result before submitting again",
                headers={"Retry-After": "5"},
            )
        repository.add_submission(
            connection, task_id, participant_id, request.exercise_id, request.code.model_dump(mode="json")
        )

    return await tasks_service.accept(
        db,
        dispatcher,
        participant_id,
        SUBMISSION.name,
        request,
        idempotency_key=idempotency_key,
        also_write=store_submission,
    )


async def progress(session: AsyncSession, participant_id: uuid.UUID) -> list[ExerciseProgress]:
    """The caller's attempts and best result per exercise."""
    rows = await session.run_sync(repository.summary_by_exercise, participant_id)
    return [ExerciseProgress(exercise_id=e, attempts=a, passed=p) for e, a, p in rows]


async def latest(
    session: AsyncSession, registry: TaskRegistry, participant_id: uuid.UUID, exercise_id: str
) -> LatestSubmission:
    """The caller's most recent submission for the exercise, as its task (graded or still running)."""
    task_id = await session.run_sync(repository.latest_task_id, participant_id, exercise_id)
    if task_id is None:
        return LatestSubmission(task=None)
    return LatestSubmission(task=await tasks_service.get_status(session, registry, task_id, participant_id))
