"""Celery adapters for submissions: thin, named `submissions.<verb>`, arguments are ids."""

import uuid

from app.core.logging import log_context_bound
from app.models import TaskKind
from app.submissions import service
from app.tasks.dispatch import TASK_NAMES
from app.worker.celery_app import celery_app
from app.worker.resources import get_resources


@celery_app.task(name=TASK_NAMES[TaskKind.SUBMISSION])
def grade(task_id: str) -> None:
    """Grade one submission in the sandbox."""
    resources = get_resources()
    with log_context_bound(task_id=task_id):
        resources.run(service.grade(resources, uuid.UUID(task_id)))
