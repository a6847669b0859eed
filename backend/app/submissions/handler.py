"""The grader's handler (worker side): a submission graded in the sandbox, its grade kept."""

from sqlalchemy import Connection

from app.exercises.repository import all_exercises
from app.exercises.schemas import CodeFiles
from app.submissions import repository
from app.submissions.sandbox import SandboxPool
from app.submissions.schemas import SubmissionRequest
from app.tasks.contract import HandlerResources, Job, Outcome
from app.tasks.errors import PermanentError


class Grader:
    """Grades submissions; one per worker process, with its pool of grading lanes (started on the first one)."""

    def __init__(self, resources: HandlerResources):
        settings = resources.settings
        self._sandbox = SandboxPool(
            chromium_path=settings.chromium_path,
            max_concurrency=settings.sandbox_max_concurrency,
            queue_timeout_s=settings.sandbox_queue_timeout_s,
            timeout_s=settings.sandbox_timeout_s,
            per_learner=settings.sandbox_max_per_learner,
            js_heap_mb=settings.sandbox_js_heap_mb,
            memory_mb=settings.sandbox_memory_mb,
            disk_mb=settings.sandbox_disk_mb,
            isolation=settings.sandbox_isolation,
            lane_idle_s=settings.sandbox_lane_idle_s,
        )

    def unavailable(self) -> str | None:
        """Why this process cannot grade right now, or None (its worker's heartbeat says it)."""
        return self._sandbox.unavailable()

    async def __call__(self, job: Job[SubmissionRequest]) -> Outcome:
        """Grade the code, reporting each checkpoint; graded is success, whether or not the code passed."""
        exercise_id = job.input.exercise_id
        exercise = all_exercises().get(exercise_id)
        if exercise is None:
            raise PermanentError("exercise_not_found", f"the exercise {exercise_id!r} no longer exists")
        code = CodeFiles.model_validate(job.input.code.model_dump())
        graded = await self._sandbox.grade(exercise, code, job.report.progress, learner=str(job.participant_id))
        result = graded.as_result()

        def store_grade(connection: Connection) -> None:
            repository.record_grade(connection, job.task_id, result)

        return Outcome(result=result, persist=store_grade)

    async def aclose(self) -> None:
        """Stop every grading lane."""
        await self._sandbox.close()
