"""SQL for submissions. Never commits."""

import uuid
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, insert, select, update
from sqlalchemy.orm import Session

from app.db.base import Executor, table_of, utcnow
from app.models import TERMINAL_STATES, Submission, Task

# A task older than this is the reconciler's business, not a grading in flight.
IN_FLIGHT_WINDOW = timedelta(hours=1)
_IN_FLIGHT = (
    select(func.count())
    .select_from(Task)
    .where(
        Task.participant_id == bindparam("pid"),
        Task.created_at > bindparam("since"),
        Task.kind == bindparam("task_kind"),
        Task.state.not_in([state.value for state in TERMINAL_STATES]),
    )
)


def in_flight(db: Executor, participant_id: uuid.UUID, kind: str) -> int:
    """How many of the participant's tasks of `kind` are not finished (within the last hour)."""
    since = utcnow() - IN_FLIGHT_WINDOW
    return int(db.execute(_IN_FLIGHT, {"pid": participant_id, "since": since, "task_kind": kind}).scalar_one())


_ADD_SUBMISSION = insert(table_of(Submission))


def add_submission(
    db: Executor, task_id: uuid.UUID, participant_id: uuid.UUID, exercise_id: str, code: dict[str, Any]
) -> None:
    """Insert the learner's code for a grading task."""
    db.execute(
        _ADD_SUBMISSION,
        {"task_id": task_id, "participant_id": participant_id, "exercise_id": exercise_id, "code": code},
    )


_RECORD_GRADE = (
    update(Submission)
    .where(Submission.task_id == bindparam("tid"))
    .values(passed=bindparam("grade_passed"), result=bindparam("grade"), graded_at=bindparam("graded"))
)


def record_grade(db: Executor, task_id: uuid.UUID, result: dict[str, Any]) -> None:
    """Store the grade with the submission (in the task's terminal transaction)."""
    db.execute(
        _RECORD_GRADE, {"tid": task_id, "grade_passed": bool(result["passed"]), "grade": result, "graded": utcnow()}
    )


def summary_by_exercise(session: Session, participant_id: uuid.UUID) -> list[tuple[str, int, bool]]:
    """Per exercise: attempts and whether any graded attempt passed."""
    passed = func.max(case((Submission.passed.is_(True), 1), else_=0))
    query = (
        select(Submission.exercise_id, func.count(), passed)
        .where(Submission.participant_id == participant_id)
        .group_by(Submission.exercise_id)
    )
    return [(exercise_id, int(attempts), bool(best)) for exercise_id, attempts, best in session.execute(query)]


def latest_task_id(session: Session, participant_id: uuid.UUID, exercise_id: str) -> uuid.UUID | None:
    """The task of the participant's most recent submission for the exercise, if any."""
    query = (
        select(Submission.task_id)
        .where(Submission.participant_id == participant_id, Submission.exercise_id == exercise_id)
        .order_by(Submission.created_at.desc())
        .limit(1)
    )
    task_id: uuid.UUID | None = session.scalar(query)
    return task_id
