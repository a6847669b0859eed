"""Running one delivery of a task on the worker's event loop: claim, handle, commit, publish.

Per execution, in round trips (a no-delay chat answer needs about four to Redis and two to
the database, docs/scaling.md):
1. Redis, one script: the message is picked up, the lease taken with a fencing token.
2. Database, one transaction: the task read and marked STARTED, with the id its STARTED
   envelope is about to get as `last_event_id`.
3. Redis, one pipeline: `task_status STARTED` (fenced), and the submit→first-message latency,
   sent while the handler begins (4); the handler's envelopes queue behind it.
4. The handler runs; what it reports is published behind it in batches (tasks/reporter.py).
5. Database, one transaction: the terminal state, the handler's own rows and `last_event_id`.
6. Redis, one pipeline: the last text not yet sent, the result envelope, its latency, the
   handler's counters, the lease's release.
The result envelope's id must be known before the commit in step 5 (SPEC §5.6: the terminal
state is committed before anyone can see the envelope), so the runner chooses it: a stream id
slightly ahead of now, which Redis accepts as long as nothing newer reached the user's stream
meanwhile; otherwise it takes the next free id and `last_event_id` is written once more.
"""

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aioredis
from redis.asyncio.client import Pipeline
from sqlalchemy import Connection
from sqlalchemy.exc import OperationalError, SQLAlchemyError

from app.core.config import Settings
from app.core.logging import bind_log_context
from app.db.base import utcnow
from app.db.threaded import ThreadedDatabase
from app.metrics import latency
from app.metrics import shared as shared_metrics
from app.models import TaskState
from app.realtime.envelopes import EnvelopeType, id_ahead, utc_timestamp
from app.realtime.publisher import AsyncEnvelopePublisher, Outgoing, PublishRefused
from app.tasks import repository
from app.tasks.contract import Handler, HandlerResources, Job, Outcome
from app.tasks.errors import LeaseLost, PermanentError, TaskCancelled
from app.tasks.keys import METRICS_KEY
from app.tasks.lease import Leases, LeaseState
from app.tasks.registry import TaskKindSpec, TaskRegistry
from app.tasks.reporter import EnvelopeStream, stop_reason

logger = logging.getLogger(__name__)

# How far ahead of the clock chosen ids are: the user's other publishers (other tasks, a
# cancellation) still take ids below it while the terminal transaction commits.
ID_HEADROOM_MS = 500
INFRASTRUCTURE_ERRORS = (redis.RedisError, OperationalError)
# A committed result is published however long Redis takes to come back, up to this: its
# learners' clients would otherwise never hear of it (with a persistent Redis their history is
# intact, so nothing tells them to read it over HTTP).
RESULT_PUBLISH_DEADLINE_S = 120.0


def choose_event_id(after: str | None, *, leave: int = 0) -> str:
    """An id for an envelope this execution is about to publish (see envelopes.id_ahead)."""
    return id_ahead(after, headroom_ms=ID_HEADROOM_MS, leave=leave)


def _stop_if_failed(started: asyncio.Future[None], stopped: asyncio.Future[None]) -> None:
    """A refused (or failed) STARTED stops the execution like a refused delta."""
    if not started.cancelled() and (failure := started.exception()) is not None and not stopped.done():
        stopped.set_exception(failure)


class PrepareFailed(Exception):
    """The handler's `prepare` raised: the execution fails with `internal_error`."""

    def __init__(self, error: Exception):
        super().__init__(f"prepare failed: {error!r}")
        self.error = error


class SoftTimeLimitExceeded(Exception):
    """The handler ran past its kind's soft time limit."""


class Handlers:
    """Each kind's handler, built once per process and closed with it.

    Building one imports its module and creates its clients (Playwright, an httpx pool that
    loads CA certificates): tens of milliseconds that must not pass on the event loop. A worker
    builds the handlers of the kinds it serves before it takes tasks (`build`); any other is
    built in a thread on first use.
    """

    def __init__(self, resources: HandlerResources):
        self._resources = resources
        self._built: dict[str, Handler[Any]] = {}
        self._lock = asyncio.Lock()

    def build(self, kinds: Iterable[TaskKindSpec]) -> None:
        """Build these kinds' handlers now, in the calling thread (not the event loop's)."""
        for kind in kinds:
            if kind.name not in self._built:
                self._built[kind.name] = self._make(kind)

    async def get(self, kind: TaskKindSpec) -> Handler[Any]:
        """The kind's handler."""
        if kind.name not in self._built:
            async with self._lock:
                if kind.name not in self._built:
                    self._built[kind.name] = await asyncio.to_thread(self._make, kind)
        return self._built[kind.name]

    def _make(self, kind: TaskKindSpec) -> Handler[Any]:
        handler: Handler[Any] = kind.load_handler_factory()(self._resources)  # type: ignore[assignment]
        return handler

    def unavailable(self, kind: str) -> str | None:
        """Why the kind's handler cannot work in this process now (its optional `unavailable()`), or None."""
        check = getattr(self._built.get(kind), "unavailable", None)
        return check() if check is not None else None

    async def aclose(self) -> None:
        """Close every handler built so far."""
        for name, handler in self._built.items():
            try:
                await handler.aclose()
            except Exception:
                logger.warning("a handler did not close cleanly", extra={"kind": name}, exc_info=True)
        self._built.clear()


class TaskRunner:
    """Runs task deliveries for one worker process, each kind within its own concurrency limit."""

    def __init__(
        self,
        settings: Settings,
        registry: TaskRegistry,
        client: aioredis.Redis,
        db: ThreadedDatabase,
        *,
        broker: aioredis.Redis | None = None,
        leases: Leases | None = None,
        publisher: AsyncEnvelopePublisher | None = None,
    ):
        self.settings = settings
        self.registry = registry
        self.redis = client
        self.db = db
        self.leases = leases or Leases(client, broker or client, ttl_s=settings.task_lease_ttl_s)
        self.publisher = publisher or AsyncEnvelopePublisher(
            client, history_maxlen=settings.history_maxlen, history_ttl_s=settings.history_ttl_s
        )
        self.handlers = Handlers(HandlerResources(settings, db))
        self._slots = {kind.name: asyncio.Semaphore(kind.limits(settings).concurrency) for kind in registry}
        self.running = dict.fromkeys(registry.names, 0)  # deliveries in this process now, by kind

    async def run(self, kind_name: str, task_id: uuid.UUID, participant_id: uuid.UUID | None = None) -> None:
        """Run one delivery of a task (a duplicate or finished one is acknowledged and skipped).

        `participant_id` is the task's user, as its message says; a message sent before
        messages carried it (None) has it read from the task's row.
        """
        kind = self.registry[kind_name]
        bind_log_context(task_id=str(task_id))
        self.running[kind.name] += 1
        try:
            async with self._slots[kind.name]:
                if participant_id is None:
                    participant_id = await self.db.read(repository.participant_of, task_id)
                    if participant_id is None:
                        logger.warning("a message for a task that does not exist; acknowledging it")
                        return
                await self._run(kind, task_id, str(participant_id))
        finally:
            self.running[kind.name] -= 1

    async def _run(self, kind: TaskKindSpec, task_id: uuid.UUID, participant: str) -> None:
        token = await self.leases.take(participant, task_id)
        if token is None:
            logger.info("task is running elsewhere; acknowledging a duplicate delivery")
            return
        handler = await self.handlers.get(kind)
        prepare = getattr(handler, "prepare", None)
        started_id = choose_event_id(None)

        def claim(connection: Connection) -> tuple[repository.ClaimedTask | None, Any]:
            claimed = repository.claim(connection, task_id, token, last_event_id=started_id)
            if claimed is None or prepare is None:
                return claimed, None
            try:
                return claimed, prepare(connection, task_id, claimed.participant_id)
            except (*INFRASTRUCTURE_ERRORS, SQLAlchemyError):
                raise  # nothing is claimed: the task is handed out again
            except Exception as exc:
                # A bug in the handler's reads fails the task (below), rather than unclaiming it for ever.
                return claimed, PrepareFailed(exc)

        try:
            claimed, prepared = await self.db.write(claim)
        except BaseException:
            with contextlib.suppress(Exception):
                await self.leases.release(participant, task_id, token)
            raise
        if claimed is None:
            logger.info("task already finished; acknowledging a duplicate delivery without running it")
            async with self.redis.pipeline(transaction=False) as pipe:
                self.leases.release_in(pipe, participant, task_id, token)
                pipe.hincrby(METRICS_KEY, "duplicate_deliveries:finished", 1)
                await pipe.execute(raise_on_error=False)
            return
        bind_log_context(participant_id=str(claimed.participant_id))
        await Execution(self, kind, handler, claimed, token, started_id, prepared).run()


class Execution:
    """One execution of one task, from its STARTED envelope to its result envelope."""

    def __init__(
        self,
        runner: TaskRunner,
        kind: TaskKindSpec,
        handler: Handler[Any],
        task: repository.ClaimedTask,
        token: int,
        started_id: str,
        prepared: Any,
    ):
        self._runner = runner
        self._prepared = prepared
        self._kind = kind
        self._handler = handler
        self._task = task
        self._token = token
        self._started_id = started_id
        self._guard = runner.leases.guard(str(task.participant_id), task.task_id, token)
        self._last_id: str | None = None  # the newest envelope this execution published
        # What the handler reported last and was not sent yet: it goes with the result.
        self._remaining: list[tuple[EnvelopeType, dict[str, Any]]] = []
        self._released = False
        self._log = {"attempt": token}

    async def run(self) -> None:
        """Run the handler and end the task, whatever happens (see the module docstring)."""
        settings = self._runner.settings
        # STARTED goes out while the handler begins (its first read, its request to the model):
        # the handler's envelopes wait for it in the stream, so the order is kept and the first
        # text comes a round trip sooner.
        started: asyncio.Future[None] = asyncio.ensure_future(self._publish_started())
        try:
            if self._token > settings.task_max_attempts:
                await started
                logger.error("task started too many times; failing it", extra=self._log)
                message = "the task could not be completed; please try again"
                await self._finish(TaskState.FAILURE, error={"code": "too_many_attempts", "message": message})
                return
            outcome = await self._handle(started)
            await self._finish(TaskState.SUCCESS, outcome.result, outcome=outcome)
        except TaskCancelled:
            logger.info("task cancelled; stopped", extra=self._log)
        except LeaseLost:
            logger.warning("task taken over by another execution; stopped", extra=self._log)
        except PermanentError as failure:
            logger.warning("task failed", extra={**self._log, "code": failure.code})
            await self._finish(TaskState.FAILURE, error={"code": failure.code, "message": failure.message})
        except SoftTimeLimitExceeded:
            logger.warning("task ran past its time limit", extra=self._log)
            await self._finish(TaskState.FAILURE, error={"code": "timeout", "message": self._kind.timeout_message})
        except INFRASTRUCTURE_ERRORS:
            # Left running: once its lease expires the reconciler hands it out again.
            logger.exception("infrastructure error; the task will be handed out again", extra=self._log)
            raise
        except Exception:
            logger.exception("task failed", extra=self._log)
            message = "something went wrong on our side; please try again"
            await self._finish(TaskState.FAILURE, error={"code": "internal_error", "message": message})
        finally:
            if not started.done():
                started.cancel()
            if not self._released:
                try:
                    await self._runner.leases.release(str(self._task.participant_id), self._task.task_id, self._token)
                except redis.RedisError:
                    logger.warning("could not release the lease; it will expire", extra=self._log)

    async def _publish_started(self) -> None:
        task = self._task

        def first_latency(pipe: Pipeline) -> None:
            # A takeover's STARTED is not the task's first message.
            if not task.resumed:
                latency.observe_in(pipe, self._kind.name, "first", (utcnow() - task.created_at).total_seconds())

        try:
            self._last_id = await self._runner.publisher.publish(
                str(task.participant_id),
                EnvelopeType.TASK_STATUS,
                str(task.task_id),
                {"state": TaskState.STARTED},
                guard=self._guard,
                envelope_id=self._started_id,
                also=first_latency,
            )
        except PublishRefused as refusal:
            raise stop_reason(refusal) from None

    async def _handle(self, started: asyncio.Future[None]) -> Outcome:
        """The handler's Outcome, with the lease kept and the kind's soft time limit applied."""
        runner, task = self._runner, self._task
        try:
            if isinstance(self._prepared, PrepareFailed):
                raise self._prepared from self._prepared.error
            job_input = self._kind.input_model.model_validate(task.input)
        except Exception:
            await started  # STARTED goes out before the failure's result (or was refused: then that)
            raise
        stopped: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        started.add_done_callback(lambda done: _stop_if_failed(done, stopped))
        stream = EnvelopeStream(
            runner.publisher,
            self._kind,
            task.task_id,
            task.participant_id,
            self._guard,
            delta_interval_s=runner.settings.chat_delta_interval_ms / 1000,
            write_progress=self._write_progress,
            stopped=stopped,
            opens_after=started,
        )
        job = Job(
            task_id=task.task_id,
            participant_id=task.participant_id,
            input=job_input,
            attempt=self._token,
            resumed=task.resumed,
            report=stream,
            prepared=self._prepared,
        )
        work: asyncio.Future[Outcome] = asyncio.ensure_future(self._handler(job))
        renewer = asyncio.ensure_future(self._keep_lease(stopped))
        expired = False
        try:
            async with asyncio.timeout(self._kind.limits(runner.settings).soft_time_limit_s):
                waiting: list[asyncio.Future[Any]] = [work, stopped]
                await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            expired = True
        finally:
            renewer.cancel()
            if not work.done():
                work.cancel()
                with contextlib.suppress(BaseException):
                    await work
        if stopped.done() or expired:
            stream.abandon()
            if stopped.done():
                stopped.result()  # raises LeaseLost, TaskCancelled or the Redis error
            raise SoftTimeLimitExceeded
        try:
            outcome = work.result()
        except BaseException:
            await started  # raises LeaseLost or TaskCancelled when STARTED was refused
            await stream.close()  # what was reported (a RETRYING, say) goes out before the failure
            self._last_id = stream.last_id or self._last_id
            raise
        await started
        self._remaining = await stream.hand_over()
        self._last_id = stream.last_id or self._last_id
        return outcome

    async def _keep_lease(self, stopped: asyncio.Future[None]) -> None:
        """Renew the lease every third of its lifetime; stop the execution when it is lost or the task cancelled."""
        runner, task = self._runner, self._task
        while True:
            await asyncio.sleep(runner.settings.task_lease_ttl_s / 3)
            try:
                state = await runner.leases.renew(str(task.participant_id), task.task_id, self._token)
            except redis.RedisError:
                logger.warning("could not renew the lease; trying again", extra=self._log, exc_info=True)
                continue
            if state is not LeaseState.HELD and not stopped.done():
                logger.warning("the lease says stop", extra={**self._log, "lease": str(state)})
                stopped.set_exception(LeaseLost() if state is LeaseState.LOST else TaskCancelled())
                return

    async def _publish_result_again(self, result: Outgoing, failure: redis.RedisError) -> str | None:
        """Publish a committed result until Redis takes it (or the deadline passes): its id, or None.

        Only the result goes again (it carries the whole answer; the text sent with it may have
        gone through). Its chosen id makes a repeat of a publish that went through a no-op.
        """
        loop = asyncio.get_running_loop()
        deadline, pause = loop.time() + RESULT_PUBLISH_DEADLINE_S, 0.25
        while loop.time() < deadline:
            logger.warning("could not publish the result yet; trying again", extra={**self._log, "error": str(failure)})
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
            try:
                return await self._runner.publisher.send(result)
            except redis.RedisError as exc:
                failure = exc
        logger.error("the result is stored but could not be published; clients read it over HTTP", exc_info=failure)
        return None

    async def _write_progress(self, stage: str, fraction: float) -> None:
        await self._runner.db.write(repository.record_progress, self._task.task_id, self._token, stage, fraction)

    async def _finish(
        self,
        state: TaskState,
        data: dict[str, Any] | None = None,
        *,
        error: dict[str, str] | None = None,
        outcome: Outcome | None = None,
    ) -> None:
        """Commit the terminal state once (with the Outcome's rows), then publish the result envelope."""
        runner, task, kind = self._runner, self._task, self._kind
        data = data if data is not None else {}
        remaining, self._remaining = self._remaining, []
        end_id = choose_event_id(self._last_id, leave=len(remaining))

        def write(connection: Connection) -> bool:
            written = repository.finish(
                connection,
                task.task_id,
                state,
                result=data if error is None else None,
                error=error,
                attempt=self._token,
                last_event_id=end_id,
            )
            if written and outcome is not None and outcome.persist is not None:
                outcome.persist(connection)
            return written

        if not await runner.db.write(write):
            logger.warning("task already had a terminal state; result not published again", extra=self._log)
            return

        def alongside(pipe: Pipeline) -> None:
            latency.observe_in(pipe, kind.name, "result", (utcnow() - task.created_at).total_seconds())
            shared_metrics.count_finished_in(pipe, kind.name, state, error)
            for key, fields in (outcome.tallies if outcome is not None else {}).items():
                for name, amount in fields.items():
                    pipe.hincrby(key, name, amount)
            runner.leases.release_in(pipe, str(task.participant_id), task.task_id, self._token)

        participant, task_id = str(task.participant_id), str(task.task_id)
        # The last text first, fenced as all of the handler's envelopes; then the result: the
        # terminal state is ours alone now, so it needs no guard. One round trip for both.
        outgoing = [Outgoing(participant, kind_, task_id, body, guard=self._guard) for kind_, body in remaining]
        result = Outgoing(
            participant,
            kind.result_type,
            task_id,
            data,
            error,
            envelope_id=end_id,
            also=alongside,
            timestamp=utc_timestamp(),  # fixed: a repeat of this publish must be byte-identical
        )
        *sent, published = await runner.publisher.publish_many([*outgoing, result])
        if any(isinstance(reply, PublishRefused) for reply in sent):
            logger.info("the last text was refused (the task was cancelled as it finished); the result has it all")
        if isinstance(published, redis.RedisError):
            again = await self._publish_result_again(result, published)
            if again is None:
                return
            published = again
        if isinstance(published, BaseException):
            raise published
        envelope_id = published
        self._released = True
        if envelope_id != end_id:
            # Something newer reached the user's stream during the commit: record the real id.
            await runner.db.write(repository.set_last_event_id, task.task_id, envelope_id)
        logger.info("task finished", extra={**self._log, "state": str(state)})
