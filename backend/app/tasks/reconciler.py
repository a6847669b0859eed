"""The reconciler: no accepted task stays QUEUED forever, and no dead worker's task waits 30 minutes.

It runs as a thread in each worker's main process; a Redis lock lets one of them work per
interval. Each pass:
1. tasks marked running whose lease has expired (their worker died, whole) go back to QUEUED
   and to the broker — Redis alone would redeliver them only after the visibility timeout;
2. QUEUED tasks the broker no longer holds (missing from the dispatched set: Redis restarted
   without persistence, the API died between commit and enqueue, or a worker dropped the
   message because an execution that died before its claim still held the lease) are sent again;
3. QUEUED tasks whose message a worker took and never claimed (it died in between: the message
   waits in kombu's unacknowledged hash until the visibility timeout, 30 minutes) are sent again;
4. QUEUED tasks whose message is neither in its queue nor taken (a worker killed between kombu's
   pop and its unacknowledged record took it along) are sent again; where a queue is too long
   to scan, once they were dispatched longer ago than the visibility timeout.
Sending a task twice is harmless: leases and the write-once terminal state make the extra
copy a no-op.
"""

import logging
import threading
import time
import uuid
from datetime import timedelta
from typing import cast

from celery import Celery

from app.core.config import Settings
from app.core.redis import create_sync_bus_redis, create_sync_redis
from app.db.base import utcnow
from app.db.session import create_sync_engine, sync_sessionmaker
from app.tasks import repository
from app.tasks.broker_message import UNACKED_INDEX_KEY, UNACKED_KEY, task_id_of_queued, task_id_of_unacked
from app.tasks.dispatch import dispatch_sync
from app.tasks.keys import DISPATCHED_KEY, RECONCILER_LOCK_KEY, lease_key
from app.tasks.registry import TaskRegistry
from app.tasks.repository import TaskRef

logger = logging.getLogger(__name__)

# A QUEUED row younger than this may still be on its way to the broker.
QUEUED_GRACE_S = 5.0
DISPATCHED_RETENTION_S = 2 * 24 * 3600
# Messages read at most per queue to tell that a task's message is in none of them.
VANISHED_SCAN_LIMIT = 5000


class Reconciler:
    """Finds tasks no worker will ever finish and hands them out again."""

    def __init__(self, settings: Settings, app: Celery, registry: TaskRegistry):
        self._settings = settings
        self._app = app
        self._registry = registry
        self._engine = create_sync_engine(settings.database_url)
        self._sessions = sync_sessionmaker(self._engine)
        self._redis = create_sync_redis(settings.required_redis_url, max_connections=2)  # the broker's
        self._bus = create_sync_bus_redis(settings, self._redis, max_connections=2)
        self._token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run passes in a daemon thread until `stop()`."""
        self._thread = threading.Thread(target=self._loop, name="taskwire-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop and release the clients."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._bus is not self._redis:
            self._bus.close()
        self._redis.close()
        self._engine.dispose()

    def _loop(self) -> None:
        interval = self._settings.task_reconcile_interval_s
        while not self._stop.wait(interval):
            try:
                self.reconcile_once()
            except Exception:
                logger.warning("reconciler pass failed; trying again next interval", exc_info=True)
            if self._settings.worker_heartbeat_file is not None:
                # Proof of life for a container health check: this process is running its loop.
                self._settings.worker_heartbeat_file.touch()

    def reconcile_once(self) -> tuple[int, int]:
        """One pass (if this process holds the lock); returns (orphans re-queued, lost tasks re-sent)."""
        lock_ms = int(self._settings.task_reconcile_interval_s * 1000 * 0.9)
        if not self._redis.set(RECONCILER_LOCK_KEY, self._token, nx=True, px=max(lock_ms, 100)):
            return 0, 0
        orphans = self._requeue_orphans()
        with self._sessions() as session:
            queued = repository.queued_before(session, utcnow() - timedelta(seconds=QUEUED_GRACE_S))
        lost = self._resend_lost(queued) + self._resend_unclaimed() + self._resend_vanished(queued)
        self._redis.zremrangebyscore(DISPATCHED_KEY, "-inf", time.time() - DISPATCHED_RETENTION_S)
        if orphans or lost:
            logger.warning("reconciled tasks", extra={"orphans_requeued": orphans, "lost_resent": lost})
        return orphans, lost

    def _requeue_orphans(self) -> int:
        with self._sessions() as session:
            running = repository.running_started_before(session, utcnow())
        if not running:
            return 0
        with self._bus.pipeline(transaction=False) as pipe:
            for task in running:
                pipe.exists(lease_key(str(task.participant_id), task.task_id))
            leased = pipe.execute()
        count = 0
        for task, has_lease in zip(running, leased, strict=True):
            if has_lease:
                continue
            with self._sessions.begin() as session:
                requeued = repository.requeue(session, task.task_id)
            if requeued:
                logger.warning("task's worker died; handing it out again", extra={"task_id": str(task.task_id)})
                dispatch_sync(self._app, self._redis, self._registry, task)
                count += 1
        return count

    def _resend_lost(self, queued: list[TaskRef]) -> int:
        if not queued:
            return 0
        scores = self._redis.zmscore(DISPATCHED_KEY, [str(task.task_id) for task in queued])
        # Dispatched so long ago that Redis would have redelivered it if a worker had taken it:
        # the message vanished between kombu's pop and its unacknowledged record.
        stale_before = time.time() - self._settings.celery_visibility_timeout_s
        count = 0
        for task, score in zip(queued, scores, strict=True):
            if score is None or score < stale_before:
                logger.warning("broker lost a queued task; sending it again", extra={"task_id": str(task.task_id)})
                dispatch_sync(self._app, self._redis, self._registry, task)
                count += 1
        return count

    def _resend_unclaimed(self) -> int:
        # A worker claims a task within milliseconds of taking its message, so a QUEUED task whose
        # message was taken QUEUED_GRACE_S ago belongs to a worker that died first. Only while the
        # dispatched set still shows the dispatch that worker took: a later one is a copy already
        # sent, and a missing one is _resend_lost's to handle.
        taken = cast(
            list[tuple[bytes, float]],
            self._redis.zrangebyscore(UNACKED_INDEX_KEY, "-inf", time.time() - QUEUED_GRACE_S, withscores=True),
        )
        if not taken:
            return 0
        messages = self._redis.hmget(UNACKED_KEY, [tag for tag, _ in taken])
        taken_at = {
            message_task: at
            for (_, at), raw in zip(taken, messages, strict=True)
            if raw is not None and (message_task := task_id_of_unacked(raw)) is not None
        }
        if not taken_at:
            return 0
        dispatched_at = dict(zip(taken_at, self._redis.zmscore(DISPATCHED_KEY, list(taken_at)), strict=True))
        stale = [uuid.UUID(t) for t, at in taken_at.items() if (sent := dispatched_at[t]) is not None and sent <= at]
        if not stale:
            return 0
        with self._sessions() as session:
            unclaimed = repository.queued_among(session, stale)
        for task in unclaimed:
            logger.warning(
                "a worker took the task and died before claiming it; sending it again",
                extra={"task_id": str(task.task_id)},
            )
            dispatch_sync(self._app, self._redis, self._registry, task)
        return len(unclaimed)

    def _resend_vanished(self, queued: list[TaskRef]) -> int:
        # kombu pops a message, then records it as taken: a worker killed in between (typically
        # blocked in BRPOP, the reply unread) takes the message along, and nothing in Redis will
        # redeliver it. Such a task is QUEUED, in the dispatched set, and its message is neither
        # waiting in its queue nor taken. Queues longer than the scan limit are left to
        # _resend_lost's visibility-timeout rule. Scores are read again: _resend_lost may have
        # just sent some of these.
        if not queued:
            return 0
        waiting: set[str | None] = set()
        for queue in self._registry.queues:
            if self._redis.llen(queue) > VANISHED_SCAN_LIMIT:
                return 0
            waiting |= {task_id_of_queued(raw) for raw in self._redis.lrange(queue, 0, -1)}
        present = waiting | {task_id_of_unacked(raw) for raw in self._redis.hvals(UNACKED_KEY)}
        scores = self._redis.zmscore(DISPATCHED_KEY, [str(task.task_id) for task in queued])
        settled_before = time.time() - QUEUED_GRACE_S
        count = 0
        for task, score in zip(queued, scores, strict=True):
            if score is not None and score < settled_before and str(task.task_id) not in present:
                logger.warning("the task's message vanished; sending it again", extra={"task_id": str(task.task_id)})
                dispatch_sync(self._app, self._redis, self._registry, task)
                count += 1
        return count


_reconciler: Reconciler | None = None


def start_reconciler(settings: Settings, app: Celery, registry: TaskRegistry) -> None:
    """Start this worker's reconciler thread (the main process only)."""
    global _reconciler
    if _reconciler is None:
        _reconciler = Reconciler(settings, app, registry)
        _reconciler.start()


def stop_reconciler() -> None:
    """Stop this worker's reconciler thread, if any."""
    global _reconciler
    if _reconciler is not None:
        _reconciler.stop()
        _reconciler = None
