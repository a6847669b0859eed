"""Chat on the API side: accepting a learner's question, and reading the conversation back.

The answer itself is the worker's: chat/handler.py."""

import uuid

from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from app.chat import repository
from app.chat.schemas import ChatHistoryPage, ChatMessageOut, ChatRequest
from app.chat.tasks import CHAT
from app.db.threaded import ThreadedDatabase
from app.models import ChatRole
from app.tasks import service as tasks_service
from app.tasks.dispatch import TaskDispatcher


async def submit(
    db: ThreadedDatabase,
    participant_id: uuid.UUID,
    request: ChatRequest,
    dispatcher: TaskDispatcher,
    *,
    idempotency_key: str | None = None,
) -> uuid.UUID:
    """Store the learner's message and its task, commit, then enqueue the reply; returns the task id."""

    def store_question(connection: Connection, task_id: uuid.UUID) -> None:
        repository.add_message(connection, participant_id, task_id, ChatRole.USER, request.message)

    return await tasks_service.accept(
        db,
        dispatcher,
        participant_id,
        CHAT.name,
        request,
        idempotency_key=idempotency_key,
        also_write=store_question,
    )


async def history(
    session: AsyncSession, participant_id: uuid.UUID, *, before_id: int | None, limit: int
) -> ChatHistoryPage:
    """A page of the caller's conversation, oldest first."""
    messages = await session.run_sync(repository.page, participant_id, before_id, limit)
    out = [
        ChatMessageOut(
            id=m.id,
            role=m.role,
            content=m.content,
            model=m.model,
            task_id=str(m.task_id) if m.task_id else None,
            created_at=m.created_at,
        )
        for m in messages
    ]
    return ChatHistoryPage(messages=out, next_before=out[0].id if len(out) == limit else None)
