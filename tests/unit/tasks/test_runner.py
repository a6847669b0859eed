"""The handler contract and the outcome path of the task runner, with no network.

The database is a real SQLite file (the runner's own repository and thread hop); Redis is
replaced by in-memory leases and a publisher that records each envelope together with what the
database said about the task at that instant, which is how "committed before published" is checked.
"""

import asyncio
import dataclasses
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import BaseModel
from sqlalchemy import insert, select

from app.core.config import Settings
from app.db.base import Base, table_of
from app.db.session import create_sync_engine
from app.db.threaded import ThreadedDatabase
from app.models import ChatMessage, ChatRole, Task, TaskState, User
from app.realtime.envelopes import EnvelopeType
from app.realtime.publisher import Outgoing, PublishGuard, PublishRefused
from app.tasks import repository
from app.tasks.contract import HandlerResources, Job, Outcome
from app.tasks.errors import PermanentError
from app.tasks.lease import Leases, LeaseState
from app.tasks.registry import KindLimits, TaskKindSpec, TaskRegistry
from app.tasks.runner import TaskRunner


class EchoInput(BaseModel):
    text: str


Script = Callable[[Job[EchoInput]], Awaitable[Outcome]]
SCRIPT: dict[str, Script] = {}
CALLS: list[str] = []


class ScriptedHandler:
    """The test kind's handler: runs whatever the test put in SCRIPT."""

    def __init__(self, resources: HandlerResources):
        self.resources = resources

    async def __call__(self, job: Job[EchoInput]) -> Outcome:
        CALLS.append(job.input.text)
        return await SCRIPT["run"](job)

    async def aclose(self) -> None:
        return None


class PreparingHandler(ScriptedHandler):
    """The same, with reads done in the claim's transaction."""

    def prepare(self, connection: Any, task_id: uuid.UUID, participant_id: uuid.UUID) -> dict[str, Any]:
        state = connection.execute(select(Task.state).where(Task.task_id == task_id)).scalar_one()
        return {"state_in_claim": state, "participant_id": participant_id}


class BrokenPrepareHandler(ScriptedHandler):
    """A handler whose reads have a bug."""

    def prepare(self, connection: Any, task_id: uuid.UUID, participant_id: uuid.UUID) -> None:
        raise KeyError("a bug in the handler's reads")


def _limits(_settings: Settings) -> KindLimits:
    return KindLimits(concurrency=4, soft_time_limit_s=0.5, hard_time_limit_s=5)


ECHO = TaskKindSpec(
    name="echo",
    task_name="echo.run",
    queue="echo",
    input_model=EchoInput,
    result_type=EnvelopeType.CHAT_RESULT,
    handler=f"{__name__}:ScriptedHandler",
    limits=_limits,
    delta_type=EnvelopeType.CHAT_DELTA,
    progress_type=EnvelopeType.SUBMISSION_PROGRESS,
    timeout_message="echo took too long",
)


PREPARED_ECHO = dataclasses.replace(
    ECHO, name="echo-prepared", task_name="echo.prepared", handler=f"{__name__}:PreparingHandler"
)
BROKEN_PREPARE = dataclasses.replace(
    ECHO, name="echo-broken-prepare", task_name="echo.broken", handler=f"{__name__}:BrokenPrepareHandler"
)


@dataclass
class Published:
    type: str
    data: dict[str, Any]
    error: dict[str, str] | None
    id: str
    asked_id: str | None
    guarded: bool
    state_then: str  # the task's state in the database when this was published
    alongside: list[tuple[Any, ...]]


class FakePipe:
    """Records the commands a pipeline would send."""

    def __init__(self) -> None:
        self.commands: list[tuple[Any, ...]] = []

    def __getattr__(self, name: str) -> Callable[..., None]:
        return lambda *args: self.commands.append((name, *args))

    async def __aenter__(self) -> "FakePipe":
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    async def execute(self, raise_on_error: bool = True) -> list[Any]:
        return []


class FakeRedis:
    def __init__(self) -> None:
        self.pipes: list[FakePipe] = []

    def pipeline(self, transaction: bool = True) -> FakePipe:
        self.pipes.append(FakePipe())
        return self.pipes[-1]


@dataclass
class FakePublisher:
    """Publishes into a list; can refuse from the n-th guarded envelope on, or move the result's id."""

    state_of: Callable[[], str]
    envelopes: list[Published] = field(default_factory=list)
    refuse_from: int | None = None
    move_result_id: bool = False
    started_delay_s: float = 0.0
    result_failures: int = 0  # the next results meet a dead Redis this many times
    _sequence: int = 0

    async def publish(
        self,
        participant_id: str,
        envelope_type: EnvelopeType,
        task_id: str,
        data: dict[str, object],
        error: dict[str, str] | None = None,
        *,
        guard: PublishGuard | None = None,
        envelope_id: str | None = None,
        also: Callable[[Any], object] | None = None,
    ) -> str:
        pipe = FakePipe()
        if also is not None:
            also(pipe)
        if data.get("state") == "STARTED":
            await asyncio.sleep(self.started_delay_s)
        if envelope_type == EnvelopeType.CHAT_RESULT and self.result_failures:
            self.result_failures -= 1
            raise redis.ConnectionError("Error 111 connecting: Connection refused")
        guarded = [e for e in self.envelopes if e.guarded]
        if guard is not None and self.refuse_from is not None and len(guarded) >= self.refuse_from:
            raise PublishRefused("stopped")
        self._sequence += 1
        given = envelope_id if envelope_id is not None else f"1-{self._sequence}"
        if self.move_result_id and envelope_type == EnvelopeType.CHAT_RESULT:
            given = f"{envelope_id}9"
        state = self.state_of()
        self.envelopes.append(
            Published(
                str(envelope_type), dict(data), error, given, envelope_id, guard is not None, state, pipe.commands
            )
        )
        return given

    async def send(self, outgoing: Outgoing) -> str:
        (reply,) = await self.publish_many([outgoing])
        if isinstance(reply, BaseException):
            raise reply
        return reply

    async def publish_many(self, envelopes: list[Outgoing]) -> list[str | BaseException]:
        replies: list[str | BaseException] = []
        for e in envelopes:
            try:
                replies.append(
                    await self.publish(
                        e.participant_id,
                        e.envelope_type,
                        e.task_id,
                        e.data,
                        e.error,
                        guard=e.guard,
                        envelope_id=e.envelope_id,
                        also=e.also,
                    )
                )
            except Exception as exc:
                replies.append(exc)
        return replies


class FakeLeases(Leases):
    """Leases that are always free (or taken, with `token=None`)."""

    def __init__(self, token: int | None = 1):
        self.token = token
        self.released: list[int] = []

    async def take(self, participant_id: str, task_id: uuid.UUID) -> int | None:
        return self.token

    async def renew(self, participant_id: str, task_id: uuid.UUID, token: int) -> LeaseState:
        return LeaseState.HELD

    async def release(self, participant_id: str, task_id: uuid.UUID, token: int) -> None:
        self.released.append(token)

    def release_in(self, pipe: Any, participant_id: str, task_id: uuid.UUID, token: int) -> None:
        pipe.evalsha("release", 1, str(task_id), token)


@dataclass
class World:
    runner: TaskRunner
    publisher: FakePublisher
    leases: FakeLeases
    db: ThreadedDatabase
    task_id: uuid.UUID
    participant_id: uuid.UUID

    def task(self) -> Task:
        with self.db.engine.connect() as connection:
            return connection.execute(select(Task).where(Task.task_id == self.task_id)).one()  # type: ignore[return-value]

    def texts(self, kind: str = "chat_delta") -> list[str]:
        return [e.data.get("delta", "") for e in self.publisher.envelopes if e.type == kind]


def waits_until_cancelled(cancelled: asyncio.Event) -> Script:
    """A handler that would run for half a minute; `cancelled` is set when it is stopped instead."""

    async def run(job: Job[EchoInput]) -> Outcome:
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return Outcome(result={})

    return run


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    settings = Settings(
        environment="test",
        jwt_secret="unit-test-secret",
        database_url=f"sqlite:///{tmp_path / 'runner.db'}",
        redis_url="redis://unused.invalid:1/0",
        chat_delta_interval_ms=30,
    )
    engine = create_sync_engine(settings.database_url)
    Base.metadata.create_all(engine)
    participant_id, task_id = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(
            insert(table_of(User)).values(participant_id=participant_id, username="u", password_hash="-")
        )
        connection.execute(
            insert(table_of(Task)).values(
                task_id=task_id, participant_id=participant_id, kind="echo", state="QUEUED", input={"text": "hi"}
            )
        )
    db = ThreadedDatabase(engine, write_threads=1, read_threads=2)

    def state_now() -> str:
        with engine.connect() as connection:
            return str(connection.execute(select(Task.state).where(Task.task_id == task_id)).scalar_one())

    publisher = FakePublisher(state_now)
    leases = FakeLeases()
    runner = TaskRunner(
        settings,
        TaskRegistry([ECHO, PREPARED_ECHO, BROKEN_PREPARE]),
        FakeRedis(),  # type: ignore[arg-type]
        db,
        leases=leases,
        publisher=publisher,  # type: ignore[arg-type]
    )
    CALLS.clear()
    yield World(runner, publisher, leases, db, task_id, participant_id)
    db.close()


async def test_success_commits_state_rows_and_id_before_the_result_is_published(world: World) -> None:
    async def run(job: Job[EchoInput]) -> Outcome:
        job.report.delta("Hel")
        job.report.delta("lo")

        def persist(session: Any) -> None:
            session.execute(
                insert(table_of(ChatMessage)).values(
                    participant_id=job.participant_id, task_id=job.task_id, role=ChatRole.ASSISTANT, content="Hello"
                )
            )

        return Outcome(result={"message": "Hello"}, persist=persist, tallies={"counts": {"words": 1}})

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    envelopes = world.publisher.envelopes
    assert envelopes[0].type == "task_status" and envelopes[0].data == {"state": "STARTED"}
    assert envelopes[0].guarded and envelopes[0].id == envelopes[0].asked_id
    assert "".join(world.texts()) == "Hello" and all(e.guarded for e in envelopes[1:-1])
    result = envelopes[-1]
    assert result.type == "chat_result" and result.data == {"message": "Hello"} and result.error is None
    assert result.state_then == "SUCCESS", "the terminal state is committed before its envelope is published"
    assert not result.guarded
    task = world.task()
    assert task.state == "SUCCESS" and task.result == {"message": "Hello"} and task.last_event_id == result.id
    with world.db.engine.connect() as connection:
        stored = connection.execute(select(ChatMessage.content).where(ChatMessage.task_id == world.task_id)).all()
    assert [row.content for row in stored] == ["Hello"]
    commands = [command[:2] for command in result.alongside]
    assert ("hincrby", "counts") in commands, "the Outcome's tallies ride with the result"
    assert ("evalsha", "release") in commands, "the lease is released in the same round trip"
    assert any(command[0] == "hincrbyfloat" for command in result.alongside), "submit→result latency is recorded"
    assert world.leases.released == [], "no separate release round trip"


async def test_a_permanent_error_fails_the_task_with_its_code_and_stores_nothing_else(world: World) -> None:
    async def run(job: Job[EchoInput]) -> Outcome:
        job.report.delta("partial")
        raise PermanentError("echo_refused", "the echo refused")

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    result = world.publisher.envelopes[-1]
    assert result.type == "chat_result" and result.error == {"code": "echo_refused", "message": "the echo refused"}
    assert result.data == {} and result.state_then == "FAILURE"
    assert world.texts() == ["partial"], "what was reported before the failure still went out, before the result"
    task = world.task()
    assert task.state == "FAILURE" and task.error["code"] == "echo_refused" and task.result is None
    assert task.last_event_id == result.id


async def test_an_unexpected_error_is_reported_as_ours_without_its_details(world: World) -> None:
    async def run(job: Job[EchoInput]) -> Outcome:
        raise KeyError("secret detail")

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    result = world.publisher.envelopes[-1]
    assert result.error is not None and result.error["code"] == "internal_error"
    assert "secret" not in result.error["message"]
    assert world.task().state == "FAILURE"


async def test_a_handler_past_its_soft_limit_is_cancelled_and_the_task_fails_with_timeout(world: World) -> None:
    cancelled = asyncio.Event()
    SCRIPT["run"] = waits_until_cancelled(cancelled)
    await world.runner.run("echo", world.task_id)

    assert cancelled.is_set(), "the handler is cancelled at the soft limit"
    result = world.publisher.envelopes[-1]
    assert result.error == {"code": "timeout", "message": "echo took too long"}
    assert world.task().state == "FAILURE"


async def test_a_cancelled_task_stops_its_handler_and_nothing_follows(world: World) -> None:
    world.publisher.refuse_from = 1  # STARTED goes out; the first delta meets the cancellation
    stopped = asyncio.Event()

    async def run(job: Job[EchoInput]) -> Outcome:
        try:
            while True:
                job.report.delta("more ")
                await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            stopped.set()
            raise

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    assert stopped.is_set(), "the handler is stopped, not left streaming"
    assert [e.type for e in world.publisher.envelopes] == ["task_status"]
    assert world.task().state == "STARTED", "the runner writes no terminal state for a cancelled task"
    assert world.leases.released == [1]


async def test_when_the_result_gets_another_id_last_event_id_follows_it(world: World) -> None:
    world.publisher.move_result_id = True

    async def run(job: Job[EchoInput]) -> Outcome:
        return Outcome(result={"message": "ok"})

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    result = world.publisher.envelopes[-1]
    assert result.id != result.asked_id
    assert world.task().last_event_id == result.id


async def test_a_finished_task_is_acknowledged_without_running(world: World) -> None:
    await world.db.write(repository.finish, world.task_id, TaskState.SUCCESS, result={"message": "earlier"})
    SCRIPT["run"] = lambda job: asyncio.sleep(0, Outcome(result={}))
    await world.runner.run("echo", world.task_id)

    assert CALLS == [] and world.publisher.envelopes == []
    pipe = world.runner.redis.pipes[-1]  # type: ignore[attr-defined]
    assert ("hincrby", "taskwire:metrics", "duplicate_deliveries:finished", 1) in pipe.commands


async def test_a_task_running_elsewhere_is_acknowledged_without_running(world: World) -> None:
    world.leases.token = None
    SCRIPT["run"] = lambda job: asyncio.sleep(0, Outcome(result={}))
    await world.runner.run("echo", world.task_id)
    assert CALLS == [] and world.publisher.envelopes == [] and world.task().state == "QUEUED"


async def test_a_task_started_too_often_fails_without_running_its_handler(world: World) -> None:
    world.leases.token = world.runner.settings.task_max_attempts + 1
    SCRIPT["run"] = lambda job: asyncio.sleep(0, Outcome(result={}))
    await world.runner.run("echo", world.task_id)

    assert CALLS == []
    assert world.publisher.envelopes[-1].error is not None
    assert world.publisher.envelopes[-1].error["code"] == "too_many_attempts"


async def test_reports_keep_their_order_and_text_is_coalesced(world: World) -> None:
    async def run(job: Job[EchoInput]) -> Outcome:
        for i in range(40):
            job.report.delta(f"{i} ")
            await asyncio.sleep(0.002)
        job.report.progress("checking", "half way", 0.5)
        job.report.delta("end")
        return Outcome(result={"message": "done"})

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    kinds = [e.type for e in world.publisher.envelopes]
    progress_at = kinds.index("submission_progress")
    before = "".join(e.data["delta"] for e in world.publisher.envelopes[:progress_at] if e.type == "chat_delta")
    assert before == "".join(f"{i} " for i in range(40)), "text reported before the progress step goes out before it"
    assert world.texts()[-1] == "end" and kinds[-1] == "chat_result"
    assert 2 <= len(world.texts()) < 20, f"40 pieces in 80 ms coalesce at 30 ms: {world.texts()}"
    assert world.texts()[0] == "0 ", "the first piece goes out at once"
    assert world.task().progress == 1.0


async def test_the_handler_starts_at_once_but_its_envelopes_follow_started(world: World) -> None:
    world.publisher.started_delay_s = 0.2
    began: list[float] = []

    async def run(job: Job[EchoInput]) -> Outcome:
        began.append(asyncio.get_running_loop().time())
        job.report.delta("early")
        return Outcome(result={"message": "early"})

    SCRIPT["run"] = run
    t0 = asyncio.get_running_loop().time()
    await world.runner.run("echo", world.task_id)

    assert began and began[0] - t0 < 0.15, "the handler does not wait for STARTED to be published"
    assert [e.type for e in world.publisher.envelopes] == ["task_status", "chat_delta", "chat_result"]


async def test_a_task_cancelled_before_its_started_goes_out_never_runs_on(world: World) -> None:
    world.publisher.refuse_from = 0  # STARTED itself meets the cancellation
    world.publisher.started_delay_s = 0.05
    stopped = asyncio.Event()
    SCRIPT["run"] = waits_until_cancelled(stopped)
    await asyncio.wait_for(world.runner.run("echo", world.task_id), 5)
    assert stopped.is_set() and world.publisher.envelopes == []
    assert world.task().state == "STARTED"


async def test_a_handler_prepare_reads_in_the_claim_transaction_and_its_job_gets_the_result(world: World) -> None:
    seen: list[Any] = []

    async def run(job: Job[EchoInput]) -> Outcome:
        seen.append(job.prepared)
        return Outcome(result={"message": "ok"})

    SCRIPT["run"] = run
    await world.runner.run("echo-prepared", world.task_id)

    assert seen == [{"state_in_claim": "STARTED", "participant_id": world.participant_id}]
    assert world.task().state == "SUCCESS"


async def test_a_failing_prepare_fails_the_task_once_instead_of_leaving_it_queued(world: World) -> None:
    SCRIPT["run"] = lambda job: asyncio.sleep(0, Outcome(result={}))
    await world.runner.run("echo-broken-prepare", world.task_id)

    assert CALLS == [], "the handler does not run"
    assert [e.type for e in world.publisher.envelopes] == ["task_status", "chat_result"]
    assert world.publisher.envelopes[-1].error is not None
    assert world.publisher.envelopes[-1].error["code"] == "internal_error"
    assert world.task().state == "FAILURE"


async def test_a_committed_result_is_published_once_redis_is_back(world: World) -> None:
    world.publisher.result_failures = 2  # Redis is down for the first two tries

    async def run(job: Job[EchoInput]) -> Outcome:
        job.report.delta("all of it")
        return Outcome(result={"message": "all of it"})

    SCRIPT["run"] = run
    await world.runner.run("echo", world.task_id)

    results = [e for e in world.publisher.envelopes if e.type == "chat_result"]
    assert len(results) == 1 and results[0].data == {"message": "all of it"}
    assert results[0].id == results[0].asked_id == world.task().last_event_id
    assert world.publisher.envelopes[-1].type == "chat_result", "nothing after the result"
