from fastapi import APIRouter

from app.core.errors import NotFound, error_responses
from app.exercises import service
from app.exercises.schemas import ExerciseDetail, ExerciseSummary

router = APIRouter(prefix="/api/exercises", tags=["exercises"])


@router.get("", response_model=list[ExerciseSummary])
async def list_exercises() -> list[ExerciseSummary]:
    """Every exercise a learner can attempt."""
    return service.list_exercises()


@router.get("/{exercise_id}", response_model=ExerciseDetail, responses=error_responses(NotFound))
async def get_exercise(exercise_id: str) -> ExerciseDetail:
    """One exercise: description, start code and checkpoint names (never the checks or the answer)."""
    return service.get_exercise(exercise_id)
