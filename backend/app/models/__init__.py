"""Every table, imported here so Alembic and the app see the whole metadata."""

from app.models.chat_message import ChatMessage, ChatRole
from app.models.submission import Submission
from app.models.task import TERMINAL_STATES, Task, TaskState
from app.models.user import User

__all__ = ["TERMINAL_STATES", "ChatMessage", "ChatRole", "Submission", "Task", "TaskState", "User"]
