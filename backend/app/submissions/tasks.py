"""The grader's task kind: one submission, graded checkpoint by checkpoint in a sandboxed Chromium."""

from typing import Any

from app.core.config import Settings
from app.exercises.repository import all_exercises
from app.realtime.envelopes import EnvelopeType
from app.submissions.schemas import SubmissionRequest
from app.tasks.registry import KindLimits, TaskKindSpec


def _describe(task_input: dict[str, Any]) -> str:
    exercise = all_exercises().get(str(task_input["exercise_id"]))
    return exercise.title if exercise is not None else str(task_input["exercise_id"])


def _limits(settings: Settings) -> KindLimits:
    # Grading is CPU work in a browser, SANDBOX_MAX_CONCURRENCY pages at once. The worker takes
    # twice that many: a learner's second grading waits for its turn in the sandbox (one page per
    # learner at a time) without keeping another learner's grading in the queue. The sandbox
    # enforces its own page time limit; these are the backstops around it.
    budget = settings.sandbox_queue_timeout_s + settings.sandbox_timeout_s
    return KindLimits(
        concurrency=2 * settings.sandbox_max_concurrency,
        soft_time_limit_s=budget + 30,
        hard_time_limit_s=budget + 60,
    )


SUBMISSION = TaskKindSpec(
    name="submission",
    task_name="submissions.grade",
    queue="submissions",
    input_model=SubmissionRequest,
    result_type=EnvelopeType.SUBMISSION_RESULT,
    progress_type=EnvelopeType.SUBMISSION_PROGRESS,
    handler="app.submissions.handler:Grader",
    limits=_limits,
    timeout_message="grading took too long; please submit again",
    describe=_describe,
)
