import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Index, String, Uuid
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class Submission(Base):
    """A learner's code for an exercise and, once graded, its result."""

    __tablename__ = "submissions"
    __table_args__ = (Index("ix_submissions_participant_exercise", "participant_id", "exercise_id", "created_at"),)

    task_id: Mapped[uuid.UUID] = mapped_column(Uuid, ForeignKey("tasks.task_id", ondelete="CASCADE"), primary_key=True)
    participant_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.participant_id", ondelete="CASCADE"))
    exercise_id: Mapped[str] = mapped_column(String(64))
    code: Mapped[dict[str, Any]] = mapped_column(JSON)
    passed: Mapped[bool | None] = mapped_column(Boolean)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    graded_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
