import uuid
from datetime import datetime
from typing import Any

from fastapi import Response
from pydantic import BaseModel, ConfigDict

from app.tasks.registry import TaskRegistry


class TaskAccepted(BaseModel):
    """The 202 body of every submit endpoint."""

    task_id: uuid.UUID
    status_url: str

    @classmethod
    def for_task(cls, task_id: uuid.UUID, response: Response) -> "TaskAccepted":
        """The body for an accepted task, with `Location` set on the response to its status URL."""
        accepted = cls(task_id=task_id, status_url=f"/api/tasks/{task_id}")
        response.headers["Location"] = accepted.status_url
        return accepted


class TaskStatus(BaseModel):
    """A task as the database knows it (SPEC §3)."""

    model_config = ConfigDict(from_attributes=True)

    task_id: uuid.UUID
    kind: str
    state: str
    progress: float
    stage: str | None
    result: dict[str, Any] | None
    error: dict[str, Any] | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    last_event_id: str | None
    summary: str = ""  # what the task is, in the learner's words (from its kind and input)

    @classmethod
    def of(cls, task: Any, registry: TaskRegistry) -> "TaskStatus":
        """The status of a stored task, with its summary."""
        status = cls.model_validate(task)
        status.summary = registry.describe(task.kind, task.input)
        return status
