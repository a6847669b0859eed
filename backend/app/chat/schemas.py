from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.core.inbound import InboundModel, InboundPart


class CodeContext(InboundPart):
    html: str = Field(default="", max_length=100_000)
    css: str = Field(default="", max_length=100_000)
    js: str = Field(default="", max_length=100_000)


class ChatRequest(InboundModel):
    """`POST /ai/chat2`: one learner message; the server keeps the conversation."""

    message: str = Field(min_length=1, max_length=8000)
    mode: Literal["learning", "test"] = "learning"
    content_id: str | None = Field(default=None, max_length=128)
    code_context: CodeContext | None = None
    test_results: dict[str, Any] | list[Any] | None = None


class ChatMessageOut(BaseModel):
    """One turn of the conversation."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    role: str
    content: str
    model: str | None
    task_id: str | None
    created_at: datetime


class ChatHistoryPage(BaseModel):
    """A page of the conversation, oldest first; pass `next_before` as `before` for older turns."""

    messages: list[ChatMessageOut]
    next_before: int | None
