from pydantic import BaseModel, Field

from app.core.inbound import InboundModel, InboundPart
from app.tasks.schemas import TaskStatus

CODE_FIELD_MAX_CHARS = 200_000


class SubmittedCode(InboundPart):
    """The learner's three editors, each capped in size."""

    html: str = Field(default="", max_length=CODE_FIELD_MAX_CHARS)
    css: str = Field(default="", max_length=CODE_FIELD_MAX_CHARS)
    js: str = Field(default="", max_length=CODE_FIELD_MAX_CHARS)


class SubmissionRequest(InboundModel):
    """`POST /submit-test2`: code to grade against an exercise's checkpoints."""

    exercise_id: str = Field(min_length=1, max_length=64)
    code: SubmittedCode


class ExerciseProgress(BaseModel):
    """The caller's record on one exercise."""

    exercise_id: str
    attempts: int
    passed: bool


class LatestSubmission(BaseModel):
    """The caller's last submission for one exercise: its task, or null before the first."""

    task: TaskStatus | None
