"""The worker's Celery app: one thin Celery task per registered kind, run on this process's runtime."""

import logging
from collections.abc import Callable
from typing import Any

from celery import Celery
from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown

from app.core.config import Settings
from app.core.logging import log_context_bound
from app.tasks.broker import create_celery
from app.tasks.reconciler import start_reconciler, stop_reconciler
from app.tasks.registry import TaskRegistry
from app.worker.runtime import WorkerRuntime, close_runtime, get_runtime

logger = logging.getLogger(__name__)


def create_worker_app(settings: Settings, registry: TaskRegistry, queues: list[str], pool: str) -> Celery:
    """The Celery app a `taskwire worker` process runs, consuming `queues` with Celery pool `pool`."""
    app = create_celery(settings, registry)
    served = registry.in_queues(queues)

    def runtime() -> WorkerRuntime:
        return get_runtime(settings, registry, served)

    for kind in registry:
        _add_task(app, runtime, kind.name, kind.task_name)

    @worker_process_init.connect(weak=False)  # each prefork child builds its own after the fork
    def _build_runtime(**_: Any) -> None:
        runtime()

    @worker_process_shutdown.connect(weak=False)  # prefork children
    @worker_shutdown.connect(weak=False)  # the worker itself (threads and solo pools run tasks in it)
    def _close_runtime(**_: Any) -> None:
        close_runtime()

    @worker_ready.connect(weak=False)
    def _ready(**_: Any) -> None:
        if pool in ("threads", "solo"):  # tasks run in this process: ready means handlers built, clients up
            runtime()
        # The reconciler lives in the main process, beside the pool, for as long as the worker runs.
        start_reconciler(settings, app, registry)
        logger.info("worker ready", extra={"queues": ",".join(queues)})

    worker_shutdown.connect(lambda **_: stop_reconciler(), weak=False)
    return app


def _add_task(app: Celery, runtime: Callable[[], WorkerRuntime], kind: str, task_name: str) -> None:
    @app.task(name=task_name)
    def run(task_id: str, participant_id: str | None = None) -> None:
        """Run one delivery of the task on this process's event loop (ids, never objects, cross the broker)."""
        with log_context_bound(task_id=task_id):
            runtime().run_task(kind, task_id, participant_id)
