"""The registry of task kinds, and the kinds Taskwire registers."""

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from app.core.config import Settings
from app.db.session import create_sync_engine
from app.db.threaded import ThreadedDatabase
from app.realtime.envelopes import EnvelopeType
from app.task_kinds import REGISTRY
from app.tasks.contract import HandlerResources
from app.tasks.registry import KindLimits, TaskKindSpec, TaskRegistry


class Body(BaseModel):
    text: str


def _kind(name: str, *, task_name: str | None = None, queue: str = "q", handler: str = "m:f") -> TaskKindSpec:
    return TaskKindSpec(
        name=name,
        task_name=task_name or f"{name}.run",
        queue=queue,
        input_model=Body,
        result_type=EnvelopeType.CHAT_RESULT,
        handler=handler,
        limits=lambda s: KindLimits(concurrency=1, soft_time_limit_s=1, hard_time_limit_s=2),
    )


def test_kinds_are_found_by_name_and_queue() -> None:
    registry = TaskRegistry([_kind("a", queue="fast"), _kind("b", queue="slow"), _kind("c", queue="fast")])
    assert registry["b"].queue == "slow" and "c" in registry and "z" not in registry
    assert registry.names == ["a", "b", "c"]
    assert registry.queues == ["fast", "slow"]
    assert [kind.name for kind in registry.in_queues(["fast"])] == ["a", "c"]
    with pytest.raises(ValueError, match="nope"):
        registry.in_queues(["fast", "nope"])


@pytest.mark.parametrize(
    ("kinds", "complaint"),
    [
        ([_kind("a"), _kind("a", task_name="other.run")], "registered twice"),
        ([_kind("a", task_name="same.run"), _kind("b", task_name="same.run")], "used by two kinds"),
        ([_kind("a", handler="no_colon")], "module:factory"),
    ],
)
def test_a_registry_refuses_ambiguous_kinds(kinds: list[TaskKindSpec], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        TaskRegistry(kinds)


def test_taskwire_registers_the_tutor_and_the_grader_on_their_own_queues() -> None:
    assert REGISTRY.names == ["chat", "submission"]
    assert REGISTRY.queues == ["chat", "submissions"]
    settings = Settings(environment="test", jwt_secret="x" * 32)
    chat, grading = REGISTRY["chat"].limits(settings), REGISTRY["submission"].limits(settings)
    assert chat.concurrency == settings.chat_concurrency >= 256, "answers wait on the model: hundreds at once"
    assert grading.concurrency == 2 * settings.sandbox_max_concurrency, "a learner waiting for a turn holds no one back"
    assert chat.soft_time_limit_s < chat.hard_time_limit_s and grading.soft_time_limit_s < grading.hard_time_limit_s
    assert REGISTRY["chat"].delta_type is EnvelopeType.CHAT_DELTA
    assert REGISTRY["submission"].progress_type is EnvelopeType.SUBMISSION_PROGRESS


def test_every_registered_handler_builds_from_its_factory_and_closes(tmp_path: Path) -> None:
    settings = Settings(environment="test", jwt_secret="x" * 32, database_url=f"sqlite:///{tmp_path / 'h.db'}")
    db = ThreadedDatabase(create_sync_engine(settings.database_url), write_threads=1, read_threads=1)

    async def build_and_close() -> None:
        for kind in REGISTRY:
            handler = kind.load_handler_factory()(HandlerResources(settings, db))
            assert callable(handler), kind.name
            await handler.aclose()  # type: ignore[attr-defined]

    try:
        asyncio.run(build_and_close())
    finally:
        db.close()


def test_a_task_is_described_in_the_learners_words() -> None:
    from app.task_kinds import REGISTRY

    question = "why is   my list\nempty?"  # spaces and a line break fold to single spaces
    assert REGISTRY.describe("chat", {"message": question}) == "Asked: why is my list empty?"
    long = "x" * 80
    assert REGISTRY.describe("chat", {"message": long}) == f"Asked: {'x' * 60}…"
    assert REGISTRY.describe("submission", {"exercise_id": "css-colours", "code": {}}) == "Colours"
    assert REGISTRY.describe("submission", {}) == "", "an input of another shape is described as nothing"
    assert REGISTRY.describe("no-such-kind", {}) == ""
