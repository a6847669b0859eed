"""SQL for users. Never commits."""

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.models import User


def add_user(session: Session, username: str, password_hash: str) -> User:
    user = User(username=username, password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def get_by_username(session: Session, username: str) -> User | None:
    return session.scalar(select(User).where(User.username == username))
