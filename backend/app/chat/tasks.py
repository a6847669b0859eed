"""Celery adapters for chat: thin, named `chat.<verb>`, arguments are ids."""

import uuid

from app.chat import service
from app.core.logging import log_context_bound
from app.models import TaskKind
from app.tasks.dispatch import TASK_NAMES
from app.worker.celery_app import celery_app
from app.worker.resources import get_resources


@celery_app.task(name=TASK_NAMES[TaskKind.CHAT])
def reply(task_id: str) -> None:
    """Stream the tutor's reply to one chat task."""
    resources = get_resources()
    with log_context_bound(task_id=task_id):
        resources.run(service.reply(resources, uuid.UUID(task_id)))
