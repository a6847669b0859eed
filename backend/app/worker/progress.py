"""One task execution as the user sees it: state in the database, envelopes to the user's sockets."""

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import redis
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from app.core.logging import bind_log_context
from app.db.base import utcnow
from app.metrics import latency
from app.models import Task, TaskState
from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import LeaseLost, TaskCancelled
from app.tasks import repository
from app.tasks.dispatch import DISPATCHED_KEY
from app.worker.lease import TaskLease
from app.worker.resources import WorkerResources
from app.worker.retry import PermanentError, RetryPolicy, TransientError

logger = logging.getLogger(__name__)

METRICS_KEY = "taskwire:metrics"
PROGRESS_DB_INTERVAL_S = 0.5


class TaskRun:
    """One execution of a task, holding its lease: every envelope it sends is fenced by that lease."""

    def __init__(self, resources: WorkerResources, task: Task, lease: TaskLease, *, resumed: bool):
        self._resources = resources
        self.task = task
        self.lease = lease
        self.task_id = str(task.task_id)
        self.participant_id = str(task.participant_id)
        # True when an earlier execution started this task and died: partial output must go.
        self.resumed = resumed
        self._last_progress_write = 0.0
        self._first_published = resumed  # a takeover's first envelope is not the task's first

    @classmethod
    def claim(cls, resources: WorkerResources, task_id: uuid.UUID) -> "TaskRun | None":
        """Take the task for this execution, or None when it must not run here (finished, or running elsewhere)."""
        # Picked up: the broker no longer holds this message, whatever happens to it next. If it
        # is dropped below while the task is still QUEUED (a lease holder that died before its
        # claim), the reconciler sees a QUEUED task nobody holds and sends it again.
        resources.redis.zrem(DISPATCHED_KEY, str(task_id))
        with resources.sessions() as session:
            task = repository.get(session, task_id)
        if task is None:
            logger.warning("task row not found; dropping the message")
            return None
        if TaskState(task.state).is_terminal:
            _count_duplicate(resources, "finished")
            logger.info("task already finished; acknowledging a duplicate delivery without running it")
            return None
        lease = TaskLease(resources.redis, str(task_id), ttl_s=resources.settings.task_lease_ttl_s)
        token = lease.acquire()
        if token is None:
            _count_duplicate(resources, "running")
            logger.info("task is running elsewhere; acknowledging a duplicate delivery")
            return None
        with resources.sessions.begin() as session:
            claimed = repository.claim(session, task.task_id, token)
        if not claimed:
            lease.release()
            logger.info("task finished while being claimed; not running it")
            return None
        return cls(resources, task, lease, resumed=task.attempt > 0)

    def publish(
        self,
        envelope_type: EnvelopeType,
        data: dict[str, Any],
        error: dict[str, str] | None = None,
        *,
        record: bool = False,
    ) -> str:
        """Send one envelope while this execution owns the task; raises LeaseLost or TaskCancelled otherwise."""
        envelope_id = self._resources.publisher.publish(
            self.participant_id, envelope_type, self.task_id, data, error, guard=self.lease.guard
        )
        if not self._first_published:
            self._first_published = True
            self._observe_latency("first")
        if record:
            with self._resources.sessions.begin() as session:
                repository.set_last_event_id(session, self.task.task_id, envelope_id)
        return envelope_id

    def progress(self, envelope_type: EnvelopeType, stage: str, message: str, fraction: float) -> str:
        """Publish a progress envelope at once; write it to the database at most every 0.5 s."""
        envelope_id = self.publish(envelope_type, {"stage": stage, "message": message, "progress": fraction})
        now = time.monotonic()
        if now - self._last_progress_write >= PROGRESS_DB_INTERVAL_S or fraction >= 1:
            self._last_progress_write = now
            with self._resources.sessions.begin() as session:
                repository.record_progress(session, self.task.task_id, self.attempt, stage, fraction)
        return envelope_id

    @property
    def retry_policy(self) -> RetryPolicy:
        """The retry policy for transient failures, from settings."""
        settings = self._resources.settings
        return RetryPolicy(
            settings.task_retry_attempts, settings.task_retry_base_delay_s, settings.task_retry_max_delay_s
        )

    def announce_retry(self, next_attempt: int, delay_s: float, error: TransientError) -> None:
        """Tell the user a transient failure will be retried (`task_status RETRYING`)."""
        logger.warning("transient failure; retrying", extra={"code": error.code, "retry_in_s": round(delay_s, 2)})
        data = {"state": "RETRYING", "attempt": next_attempt, "retry_in_s": round(delay_s, 2), "reason": error.code}
        self.publish(EnvelopeType.TASK_STATUS, data)

    @property
    def attempt(self) -> int:
        """This execution's fencing token."""
        assert self.lease.token is not None
        return self.lease.token

    def finish(
        self,
        envelope_type: EnvelopeType,
        state: TaskState,
        data: dict[str, Any],
        *,
        error: dict[str, str] | None = None,
        also_write: Callable[[Session], None] | None = None,
    ) -> bool:
        """Commit the terminal state (and `also_write`) once, then publish the terminal envelope.

        Only this execution's fencing token may write it, and it is committed first, so a client
        reading the task when the envelope arrives sees the final state (SPEC §5.6). False when
        the task already ended (another execution, a cancellation) — then nothing is published.
        """
        result = data if error is None else None
        with self._resources.sessions.begin() as session:
            written = repository.finish(
                session, self.task.task_id, state, result=result, error=error, attempt=self.attempt
            )
            if written and also_write is not None:
                also_write(session)
        if not written:
            logger.warning("task already had a terminal state; result not published again")
            return False
        # The terminal state is ours alone now, so this envelope needs no lease guard.
        envelope_id = self._resources.publisher.publish(self.participant_id, envelope_type, self.task_id, data, error)
        self._observe_latency("result")
        with self._resources.sessions.begin() as session:
            repository.set_last_event_id(session, self.task.task_id, envelope_id)
        logger.info("task finished", extra={"state": str(state), "attempt": self.attempt})
        return True

    def _observe_latency(self, phase: str) -> None:
        latency.observe(self._resources.redis, self.task.kind, phase, (utcnow() - self.task.created_at).total_seconds())

    async def keep_lease(self) -> None:
        """Renew the lease every third of its lifetime until cancelled."""
        interval = self._resources.settings.task_lease_ttl_s / 3
        while True:
            await asyncio.sleep(interval)
            if not await asyncio.to_thread(self.lease.renew):
                logger.warning("lost the task lease; this execution stops at its next checkpoint")
                return


def _count_duplicate(resources: WorkerResources, reason: str) -> None:
    try:
        resources.redis.hincrby(METRICS_KEY, f"duplicate_deliveries:{reason}", 1)
    except redis.RedisError:
        logger.debug("could not count a duplicate delivery", exc_info=True)


async def execute(
    resources: WorkerResources,
    task_id: uuid.UUID,
    body: Callable[[TaskRun], Awaitable[None]],
    *,
    result_type: EnvelopeType,
) -> None:
    """Run one delivery of a task: claim it, keep the lease while `body` runs, release it after.

    Cancellation and a lost lease end the execution quietly (someone else owns the outcome).
    Infrastructure errors (Redis, database) propagate with the task left running and unleased,
    so the reconciler hands it to a worker again once the lease expires — up to
    TASK_MAX_ATTEMPTS executions. Any other error fails the task with `internal_error`.
    """
    run = TaskRun.claim(resources, task_id)
    if run is None:
        return
    # run_until_complete wraps this coroutine in its own task, so the binding ends with it.
    bind_log_context(participant_id=run.participant_id)
    bind = {"attempt": run.attempt}
    renewer = asyncio.create_task(run.keep_lease())
    try:
        run.publish(EnvelopeType.TASK_STATUS, {"state": TaskState.STARTED}, record=True)
        if run.attempt > resources.settings.task_max_attempts:
            logger.error("task started too many times; failing it", extra=bind)
            error = {"code": "too_many_attempts", "message": "the task could not be completed; please try again"}
            run.finish(result_type, TaskState.FAILURE, {}, error=error)
            return
        await body(run)
    except TaskCancelled:
        logger.info("task cancelled; stopped at a checkpoint", extra=bind)
    except LeaseLost:
        logger.warning("task taken over by another execution; stopped", extra=bind)
    except PermanentError as failure:
        logger.warning("task failed", extra={**bind, "code": failure.code})
        run.finish(result_type, TaskState.FAILURE, {}, error={"code": failure.code, "message": failure.message})
    except (redis.RedisError, OperationalError):
        logger.exception("infrastructure error; the task will be handed out again", extra=bind)
        raise
    except Exception:
        logger.exception("task failed", extra=bind)
        error = {"code": "internal_error", "message": "something went wrong on our side; please try again"}
        run.finish(result_type, TaskState.FAILURE, {}, error=error)
    finally:
        renewer.cancel()
        try:
            run.lease.release()
        except redis.RedisError:
            logger.warning("could not release the lease; it will expire", extra=bind)
