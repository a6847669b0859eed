"""SQL for submissions. Never commits."""

import uuid
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.orm import Session

from app.db.base import table_of, utcnow
from app.models import Submission


def add_submission(
    session: Session, task_id: uuid.UUID, participant_id: uuid.UUID, exercise_id: str, code: dict[str, Any]
) -> None:
    """Insert the learner's code for a grading task."""
    session.execute(
        insert(table_of(Submission)).values(
            task_id=task_id, participant_id=participant_id, exercise_id=exercise_id, code=code
        )
    )


def record_grade(session: Session, task_id: uuid.UUID, result: dict[str, Any]) -> None:
    session.execute(
        update(Submission)
        .where(Submission.task_id == task_id)
        .values(passed=bool(result["passed"]), result=result, graded_at=utcnow())
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
