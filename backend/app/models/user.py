import uuid
from datetime import datetime

from sqlalchemy import Boolean, String, Uuid, false
from sqlalchemy.orm import Mapped, mapped_column

from app.db.base import Base, UTCDateTime, utcnow


class User(Base):
    __tablename__ = "users"

    participant_id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # May open the ops page; set only by `taskwire admin add` (never by a name, never over HTTP).
    is_operator: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false(), index=True)
