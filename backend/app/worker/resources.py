"""Per-worker-process clients (database, Redis, publisher, event loop, chat provider), built after fork."""

import asyncio
import logging
import os
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from celery.signals import worker_process_init, worker_process_shutdown, worker_ready, worker_shutdown

from app.chat.llm import ChatProvider, OfflineProvider, OpenAICompatibleProvider
from app.core.config import Settings, get_settings
from app.core.redis import create_sync_redis
from app.db.session import create_sync_engine, sync_sessionmaker
from app.realtime.publisher import EnvelopePublisher
from app.submissions.sandbox import SandboxPool

logger = logging.getLogger(__name__)
T = TypeVar("T")


class WorkerResources:
    """Everything a task needs that is expensive to create: one of each per worker process."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.engine = create_sync_engine(settings.database_url)
        self.sessions = sync_sessionmaker(self.engine)
        self.redis = create_sync_redis(settings.required_redis_url)
        self.publisher = EnvelopePublisher(
            self.redis, history_maxlen=settings.history_maxlen, history_ttl_s=settings.history_ttl_s
        )
        # One event loop per process, in its own thread and kept open: async clients (httpx,
        # Playwright) are reused across tasks, and concurrent tasks (Celery's threads pool)
        # share them — one Chromium pool bounds every submission this process grades.
        self.loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(target=self.loop.run_forever, name="taskwire-worker-loop", daemon=True)
        self._loop_thread.start()
        self.chat_provider: ChatProvider = _create_chat_provider(settings)
        # No browser starts until the first submission arrives.
        self.sandbox = SandboxPool(
            chromium_path=settings.chromium_path,
            max_concurrency=settings.sandbox_max_concurrency,
            queue_timeout_s=settings.sandbox_queue_timeout_s,
            timeout_s=settings.sandbox_timeout_s,
        )

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a task's coroutine on this process's event loop and wait for it (from any thread)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def close(self) -> None:
        """Release every client; called when the worker process exits."""
        try:
            self.run(self.sandbox.close())
            if isinstance(self.chat_provider, OpenAICompatibleProvider):
                self.run(self.chat_provider.aclose())
        except Exception:
            logger.warning("worker clients did not close cleanly", exc_info=True)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._loop_thread.join(timeout=5)
        self.redis.close()
        self.engine.dispose()


def _create_chat_provider(settings: Settings) -> ChatProvider:
    if settings.llm_base_url:
        return OpenAICompatibleProvider(
            base_url=settings.llm_base_url,
            api_key=settings.llm_api_key,
            connect_timeout_s=settings.llm_connect_timeout_s,
            read_timeout_s=settings.llm_read_timeout_s,
        )
    return OfflineProvider(delay_ms=settings.llm_offline_delay_ms)


_resources: WorkerResources | None = None
_resources_pid: int | None = None


_resources_lock = threading.Lock()


def get_resources() -> WorkerResources:
    """This process's resources, created on first use after a fork (never inherited from a parent)."""
    global _resources, _resources_pid
    with _resources_lock:
        if _resources is None or _resources_pid != os.getpid():
            _resources, _resources_pid = WorkerResources(get_settings()), os.getpid()
        return _resources


@worker_process_init.connect
def _init_process_resources(**_: object) -> None:
    get_resources()


@worker_process_shutdown.connect  # prefork children
@worker_shutdown.connect  # the worker itself (threads and solo pools run tasks in it)
def _close_process_resources(**_: object) -> None:
    global _resources
    if _resources is not None and _resources_pid == os.getpid():
        _resources.close()
        _resources = None


@worker_ready.connect
def _announce_ready(**_: object) -> None:
    logger.info("worker ready")
