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


def set_operator(session: Session, username: str, is_operator: bool) -> User | None:
    """Promote or demote the account with this (canonical) username; None when there is none."""
    user = get_by_username(session, username)
    if user is not None:
        user.is_operator = is_operator
        session.flush()
    return user


def operator_names(session: Session) -> list[str]:
    """The usernames of every operator account."""
    return list(session.scalars(select(User.username).where(User.is_operator).order_by(User.username)))
