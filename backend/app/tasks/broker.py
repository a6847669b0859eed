"""The Celery app as both sides use it: broker settings, and queues and limits from the registry.

The API builds one only to write task messages and to revoke; the worker (worker/celery_app.py)
adds a Celery task per kind. Neither side's Celery app knows about the other's code.
"""

from celery import Celery

from app.core.config import Settings
from app.tasks.registry import TaskRegistry


def create_celery(settings: Settings, registry: TaskRegistry) -> Celery:
    """A Celery app with Taskwire's broker and reliability settings (SPEC §6)."""
    app = Celery("taskwire")
    app.conf.update(
        broker_url=settings.required_redis_url,
        # Broadcasts on SUBSCRIBE, not PSUBSCRIBE (broker_transport.py), for a redis:// or
        # rediss:// broker; a URL of another scheme keeps the transport kombu picks for it.
        broker_transport=_transport_for(settings.required_redis_url),
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            "visibility_timeout": settings.celery_visibility_timeout_s,
            "unacked_restore_interval": settings.celery_unacked_restore_interval_s,
            "unacked_restore_throttle": settings.celery_unacked_restore_throttle,
            "socket_keepalive": True,
            "health_check_interval": 30,
        },
        # The database is the truth about a task; Celery's result store would be a second one.
        task_ignore_result=True,
        result_backend=None,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=registry.queues[0],
        task_routes={kind.task_name: {"queue": kind.queue} for kind in registry},
        # Only the hard limit here (it works in the prefork pool): the soft one is the runner's
        # asyncio timeout, because Celery's signal-based soft limit would land in the event loop.
        task_annotations={kind.task_name: {"time_limit": kind.limits(settings).hard_time_limit_s} for kind in registry},
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        # Task events (received, started, succeeded…) cost a publish each: only when Flower watches.
        worker_send_task_events=settings.celery_events,
        enable_utc=True,
    )
    return app


def _transport_for(url: str) -> str | None:
    if url.split("://", 1)[0] in ("redis", "rediss"):
        return "app.tasks.broker_transport:Transport"
    return None
