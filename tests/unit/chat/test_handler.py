"""The tutor's handler against the contract: it reads in `prepare`, streams through the reporter,
and returns an Outcome whose rows are written by whoever commits it — with no network."""

import asyncio
import uuid
from pathlib import Path

from sqlalchemy import insert, select

from app.chat.handler import ChatAnswerer
from app.chat.repository import add_message
from app.chat.schemas import ChatRequest
from app.core.config import Settings
from app.db.base import Base, table_of
from app.db.session import create_sync_engine
from app.db.threaded import ThreadedDatabase
from app.models import ChatMessage, ChatRole, Task, User
from app.tasks.contract import HandlerResources, Job
from app.tasks.errors import TransientError


class RecordingReporter:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.resets = 0

    def delta(self, text: str) -> None:
        self.text.append(text)

    def reset(self) -> None:
        self.resets += 1

    def progress(self, stage: str, message: str, fraction: float) -> None:
        raise AssertionError("the tutor reports no progress steps")

    def retrying(self, next_attempt: int, delay_s: float, error: TransientError) -> None:
        raise AssertionError("the offline tutor never fails")


def test_the_tutor_reads_its_conversation_streams_and_returns_what_to_store(tmp_path: Path) -> None:
    settings = Settings(
        environment="test",
        jwt_secret="x" * 32,
        database_url=f"sqlite:///{tmp_path / 'chat.db'}",
        llm_offline_delay_ms=0,
    )
    engine = create_sync_engine(settings.database_url)
    Base.metadata.create_all(engine)
    participant, task = uuid.uuid4(), uuid.uuid4()
    with engine.begin() as connection:
        connection.execute(insert(table_of(User)).values(participant_id=participant, username="u", password_hash="-"))
        connection.execute(
            insert(table_of(Task)).values(task_id=task, participant_id=participant, kind="chat", input={})
        )
        add_message(connection, participant, None, ChatRole.USER, "what is a div?")
        add_message(connection, participant, None, ChatRole.ASSISTANT, "a box for other elements")
        add_message(connection, participant, task, ChatRole.USER, "why is my list not red?")
    db = ThreadedDatabase(engine, write_threads=1, read_threads=1)
    handler = ChatAnswerer(HandlerResources(settings, db))
    reporter = RecordingReporter()
    try:
        with engine.connect() as connection:
            turns = handler.prepare(connection, task, participant)
        assert [(t.role, t.content) for t in turns] == [
            ("user", "what is a div?"),
            ("assistant", "a box for other elements"),
        ], "the conversation before this task, oldest first; not the question being answered"

        request = ChatRequest(message="why is my list not red?")
        job = Job(task, participant, request, attempt=1, resumed=False, report=reporter, prepared=turns)
        outcome = asyncio.run(handler(job))

        assert outcome.result["model"] == "offline"
        assert "".join(reporter.text) == outcome.result["message"] and len(reporter.text) > 5
        assert "why is my list not red?" in outcome.result["message"]
        assert reporter.resets == 0
        assert outcome.persist is not None
        with engine.begin() as connection:
            outcome.persist(connection)
        with engine.connect() as connection:
            stored = connection.execute(
                select(ChatMessage.role, ChatMessage.content, ChatMessage.raw_prompt_to_llm).where(
                    ChatMessage.task_id == task, ChatMessage.role == ChatRole.ASSISTANT
                )
            ).one()
        assert stored.content == outcome.result["message"]
        assert [m["content"] for m in stored.raw_prompt_to_llm][1:3] == ["what is a div?", "a box for other elements"]
        with engine.connect() as connection:
            question = connection.exec_driver_sql(
                "SELECT usage IS NULL, raw_prompt_to_llm IS NULL FROM chat_messages WHERE role = 'user' LIMIT 1"
            ).one()
        assert tuple(question) == (1, 1), "a question's missing usage and prompt are SQL NULL"

        resumed = RecordingReporter()
        asyncio.run(handler(Job(task, participant, request, attempt=2, resumed=True, report=resumed, prepared=turns)))
        assert resumed.resets == 1, "a takeover tells the client to drop the partial answer first"
    finally:
        asyncio.run(handler.aclose())
        db.close()
