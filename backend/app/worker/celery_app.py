"""The Celery application: created bare at import, configured from Settings by whoever runs it."""

from celery import Celery

from app.core.config import Settings

CHAT_QUEUE = "chat"
SUBMISSIONS_QUEUE = "submissions"
ALL_QUEUES = (CHAT_QUEUE, SUBMISSIONS_QUEUE)

celery_app = Celery("taskwire", include=["app.chat.tasks", "app.submissions.tasks"])


def configure_celery(app: Celery, settings: Settings) -> Celery:
    """Apply Taskwire's broker and reliability settings (SPEC §6) to the Celery app."""
    app.conf.update(
        broker_url=settings.required_redis_url,
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
        task_default_queue=CHAT_QUEUE,
        task_routes={"chat.*": {"queue": CHAT_QUEUE}, "submissions.*": {"queue": SUBMISSIONS_QUEUE}},
        # Only the hard limit here: the soft one is an asyncio timeout inside the task, because
        # Celery's signal-based soft limit would raise inside the event loop's machinery.
        task_annotations={
            "chat.*": {"time_limit": settings.chat_time_limit_s},
            "submissions.*": {"time_limit": settings.sandbox_queue_timeout_s + settings.sandbox_timeout_s + 60},
        },
        task_serializer="json",
        accept_content=["json"],
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        enable_utc=True,
    )
    return app
