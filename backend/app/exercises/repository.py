"""Exercises are JSON files shipped in `content/exercises/`, validated once when first read."""

import json
from functools import lru_cache
from pathlib import Path

from pydantic import ValidationError

from app.exercises.schemas import Exercise

EXERCISES_DIR = Path(__file__).resolve().parents[1] / "content" / "exercises"


class ExerciseFileError(Exception):
    """An exercise file is malformed; the message names the file and the problem."""


def load_exercises(folder: Path = EXERCISES_DIR) -> dict[str, Exercise]:
    """Every exercise in `folder` by id; raises ExerciseFileError naming the first broken file."""
    exercises: dict[str, Exercise] = {}
    for path in sorted(folder.glob("*.json")):
        try:
            exercise = Exercise.model_validate({"id": path.stem, **json.loads(path.read_text(encoding="utf-8"))})
        except (ValueError, ValidationError) as exc:
            raise ExerciseFileError(f"{path}: {exc}") from None
        exercises[exercise.id] = exercise
    if not exercises:
        raise ExerciseFileError(f"no exercise files in {folder}")
    return exercises


@lru_cache
def all_exercises() -> dict[str, Exercise]:
    """The shipped exercises, loaded and validated once per process."""
    return load_exercises()
