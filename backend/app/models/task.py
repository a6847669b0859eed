import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Index, Integer, String, UniqueConstraint, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class TaskState(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    PROGRESS = "PROGRESS"
    SUCCESS = "SUCCESS"
    FAILURE = "FAILURE"
    CANCELLED = "CANCELLED"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATES


TERMINAL_STATES = frozenset({TaskState.SUCCESS, TaskState.FAILURE, TaskState.CANCELLED})


class Task(Base):
    """One unit of submitted work; the row is the truth about its state."""

    __tablename__ = "tasks"
    __table_args__ = (
        Index("ix_tasks_participant_created", "participant_id", "created_at"),
        Index("ix_tasks_state_updated", "state", "updated_at"),
        Index("ix_tasks_created_at", "created_at"),  # the ops overview's last hour
        UniqueConstraint("participant_id", "idempotency_key", name="uq_tasks_participant_idempotency_key"),
    )

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    participant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.participant_id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))  # a name from the registry (app/task_kinds.py)
    state: Mapped[str] = mapped_column(String(16), default=TaskState.QUEUED)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    stage: Mapped[str | None] = mapped_column(String(64))
    input: Mapped[dict[str, Any]] = mapped_column(JSON)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    error: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    last_event_id: Mapped[str | None] = mapped_column(String(32))
    # The fencing token of the execution allowed to finish the task (0: never started).
    attempt: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    idempotency_key: Mapped[str | None] = mapped_column(String(128))
    request_hash: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
