"""The learner's view of the shipped exercises."""

from app.core.errors import NotFound
from app.exercises.repository import all_exercises
from app.exercises.schemas import ExerciseDetail, ExerciseSummary

_TOPIC_ORDER = {"html": 0, "css": 1, "javascript": 2}


def list_exercises() -> list[ExerciseSummary]:
    """Every exercise, in learning order: HTML, then CSS, then JavaScript."""
    ordered = sorted(all_exercises().values(), key=lambda e: _TOPIC_ORDER[e.topic])
    return [
        ExerciseSummary(id=e.id, title=e.title, topic=e.topic, checkpoint_count=len(e.checkpoints)) for e in ordered
    ]


def get_exercise(exercise_id: str) -> ExerciseDetail:
    """One exercise without its checks' internals or its answer."""
    exercise = all_exercises().get(exercise_id)
    if exercise is None:
        raise NotFound(f"no exercise {exercise_id!r}", code="exercise_not_found")
    return ExerciseDetail(
        id=exercise.id,
        title=exercise.title,
        topic=exercise.topic,
        description_md=exercise.description_md,
        start_code=exercise.start_code,
        checkpoints=[checkpoint.name for checkpoint in exercise.checkpoints],
    )
