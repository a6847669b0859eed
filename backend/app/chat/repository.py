"""SQL for chat messages. Never commits."""

import uuid
from typing import Any

from sqlalchemy import insert, or_, select
from sqlalchemy.orm import Session

from app.db.base import table_of
from app.models import ChatMessage, ChatRole


def add_message(
    session: Session,
    participant_id: uuid.UUID,
    task_id: uuid.UUID | None,
    role: ChatRole,
    content: str,
    *,
    model: str | None = None,
    usage: dict[str, Any] | None = None,
    raw_prompt_to_llm: list[dict[str, Any]] | None = None,
) -> None:
    """Insert one turn of the conversation (a Core insert: the question is written on every submit)."""
    session.execute(
        insert(table_of(ChatMessage)).values(
            participant_id=participant_id,
            task_id=task_id,
            role=role,
            content=content,
            model=model,
            usage=usage,
            raw_prompt_to_llm=raw_prompt_to_llm,
        )
    )


def turns_before_task(session: Session, participant_id: uuid.UUID, task_id: uuid.UUID, limit: int) -> list[ChatMessage]:
    """The participant's latest `limit` messages that belong to other tasks, oldest first."""
    query = (
        select(ChatMessage)
        .where(ChatMessage.participant_id == participant_id)
        .where(or_(ChatMessage.task_id.is_(None), ChatMessage.task_id != task_id))
        .order_by(ChatMessage.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))[::-1]


def page(session: Session, participant_id: uuid.UUID, before_id: int | None, limit: int) -> list[ChatMessage]:
    """Up to `limit` messages older than `before_id` (or the newest), oldest first."""
    query = select(ChatMessage).where(ChatMessage.participant_id == participant_id)
    if before_id is not None:
        query = query.where(ChatMessage.id < before_id)
    return list(session.scalars(query.order_by(ChatMessage.id.desc()).limit(limit)))[::-1]
