"""SQL for chat messages. Never commits."""

import uuid
from typing import Any, NamedTuple

from sqlalchemy import JSON, bindparam, insert, or_, select
from sqlalchemy.orm import Session

from app.db.base import Executor, table_of
from app.models import ChatMessage, ChatRole

_JSON_OR_NULL = JSON(none_as_null=True)  # a missing value is SQL NULL, not the JSON text 'null'
_ADD_MESSAGE = insert(table_of(ChatMessage)).values(
    usage=bindparam("usage_or_null", type_=_JSON_OR_NULL),
    raw_prompt_to_llm=bindparam("prompt_or_null", type_=_JSON_OR_NULL),
)
_TURNS_BEFORE_TASK = (
    select(ChatMessage.role, ChatMessage.content)
    .where(ChatMessage.participant_id == bindparam("pid"))
    .where(or_(ChatMessage.task_id.is_(None), ChatMessage.task_id != bindparam("tid")))
    .order_by(ChatMessage.id.desc())
    .limit(bindparam("turns"))
)


class Turn(NamedTuple):
    """One earlier turn of the conversation, as the prompt needs it."""

    role: str
    content: str


def add_message(
    db: Executor,
    participant_id: uuid.UUID,
    task_id: uuid.UUID | None,
    role: ChatRole,
    content: str,
    *,
    model: str | None = None,
    usage: dict[str, Any] | None = None,
    raw_prompt_to_llm: list[dict[str, Any]] | None = None,
) -> None:
    """Insert one turn of the conversation (a prebuilt Core insert: every submit and answer writes one)."""
    db.execute(
        _ADD_MESSAGE,
        {
            "participant_id": participant_id,
            "task_id": task_id,
            "role": role,
            "content": content,
            "model": model,
            "usage_or_null": usage,
            "prompt_or_null": raw_prompt_to_llm,
        },
    )


def turns_before_task(db: Executor, participant_id: uuid.UUID, task_id: uuid.UUID, limit: int) -> list[Turn]:
    """The participant's latest `limit` turns that belong to other tasks, oldest first."""
    rows = db.execute(_TURNS_BEFORE_TASK, {"pid": participant_id, "tid": task_id, "turns": limit})
    return [Turn(row.role, row.content) for row in rows][::-1]


def page(session: Session, participant_id: uuid.UUID, before_id: int | None, limit: int) -> list[ChatMessage]:
    """Up to `limit` messages older than `before_id` (or the newest), oldest first."""
    query = select(ChatMessage).where(ChatMessage.participant_id == participant_id)
    if before_id is not None:
        query = query.where(ChatMessage.id < before_id)
    return list(session.scalars(query.order_by(ChatMessage.id.desc()).limit(limit)))[::-1]
