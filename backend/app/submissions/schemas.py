from pydantic import BaseModel, ConfigDict, Field

CODE_FIELD_MAX_CHARS = 200_000


class SubmittedCode(BaseModel):
    """The learner's three editors, each capped in size."""

    model_config = ConfigDict(extra="forbid")

    html: str = Field(default="", max_length=CODE_FIELD_MAX_CHARS)
    css: str = Field(default="", max_length=CODE_FIELD_MAX_CHARS)
    js: str = Field(default="", max_length=CODE_FIELD_MAX_CHARS)


class SubmissionRequest(BaseModel):
    """`POST /submit-test2`: code to grade against an exercise's checkpoints."""

    model_config = ConfigDict(extra="forbid")

    exercise_id: str = Field(min_length=1, max_length=64)
    code: SubmittedCode


class ExerciseProgress(BaseModel):
    """The caller's record on one exercise."""

    exercise_id: str
    attempts: int
    passed: bool
