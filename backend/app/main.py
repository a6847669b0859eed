"""The API replica: `create_app()` builds the FastAPI app; its lifespan owns every long-lived client."""

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from app.auth.endpoints import router as auth_router
from app.auth.hashing import PasswordHashing
from app.chat.endpoints import router as chat_router
from app.core import api_docs
from app.core.cancellation import cancel_and_wait
from app.core.config import Settings, get_settings
from app.core.handlers import install_error_handlers
from app.core.logging import configure_logging
from app.core.middleware import BodySizeLimitMiddleware, RequestContextMiddleware, SecurityHeadersMiddleware
from app.core.rate_limit import RateLimiter
from app.core.redis import create_async_bus_redis, create_async_redis
from app.db.session import api_sessionmaker, create_api_engine, create_sync_engine
from app.db.threaded import ThreadedDatabase
from app.exercises.endpoints import router as exercises_router
from app.exercises.repository import all_exercises
from app.health.endpoints import router as health_router
from app.metrics import registry as metrics
from app.metrics.endpoints import HttpMetricsMiddleware
from app.metrics.endpoints import router as metrics_router
from app.metrics.registry import total_of
from app.ops.broadcaster import OpsBroadcaster
from app.ops.endpoints import page_router as ops_page_router
from app.ops.endpoints import router as ops_router
from app.ops.presence import REPLICAS_KEY, Heartbeat
from app.realtime.bus import BusListener
from app.realtime.cluster_bus import ClusterBus, discover
from app.realtime.endpoints import router as realtime_router
from app.realtime.envelopes import CloseCode
from app.realtime.manager import ConnectionManager
from app.realtime.publisher import AsyncEnvelopePublisher
from app.realtime.subscriptions import Subscriptions
from app.submissions.endpoints import router as submissions_router
from app.task_kinds import REGISTRY
from app.tasks.admission import SubmitAdmission
from app.tasks.broker import create_celery
from app.tasks.dispatch import TaskDispatcher
from app.tasks.endpoints import router as tasks_router

logger = logging.getLogger(__name__)

FRONTEND_DIR = Path(__file__).resolve().parents[2] / "frontend"


async def begin_shutdown(app: FastAPI) -> None:
    """Stop being ready, let sockets flush what is queued, then close them with 1012 (idempotent).

    Runs before the server drops its connections, so clients get everything already queued
    and move to another replica at once; anything not yet sent is still in their history.
    """
    state = app.state
    if getattr(state, "shutting_down", True):
        return
    state.shutting_down = True
    await state.manager.drain_and_close(
        CloseCode.SERVICE_RESTART, "server restarting", timeout_s=state.settings.shutdown_drain_timeout_s
    )


async def _announce(app: FastAPI) -> None:
    """Keep this replica in the presence registry, from when its bus listener first hears (or 5 s)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(5):
            await app.state.bus.connected.wait()
    await Heartbeat(app.state.redis, REPLICAS_KEY, lambda: _describe(app)).run()


def _describe(app: FastAPI) -> dict[str, Any]:
    """This replica's entry in the presence registry: its sockets and its bus listener's health."""
    state = app.state
    return {
        "sockets": state.manager.connection_count,
        "users": state.manager.user_count,
        "bus_connected": state.bus.connected.is_set(),
        "bus_reconnects": state.bus.reconnects,
        "delivered": total_of(metrics.ws_delivered),
        "dropped": total_of(metrics.ws_dropped),
        "shutting_down": state.shutting_down,
    }


class TaskwireApp(FastAPI):
    """FastAPI, with WebSockets routed past the HTTP middleware stack.

    None of the HTTP middleware acts on a WebSocket, yet each of its layers would stay on the
    stack for the socket's whole life: about 6 KiB per idle socket (docs/scaling.md). Sockets
    still get the Host check.
    """

    def __init__(self, *, allowed_hosts: list[str], **kwargs: Any):
        super().__init__(**kwargs)
        self._websocket_entry = TrustedHostMiddleware(self.router, allowed_hosts=allowed_hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            scope["app"] = self
            await self._websocket_entry(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the API replica: routes, middleware, error handlers and the static frontend."""
    settings = settings or get_settings()
    configure_logging(settings.log_format, settings.log_level)
    all_exercises()  # a broken exercise file stops the start, naming the file

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state = app.state
        state.engine = create_api_engine(settings.database_url)
        state.sessions = api_sessionmaker(state.engine)
        state.db = ThreadedDatabase.for_submits(create_sync_engine(settings.database_url))
        state.broker = create_async_redis(settings.required_redis_url)
        state.redis = create_async_bus_redis(settings, state.broker)
        state.registry = REGISTRY
        # A Celery app only to write task messages and revoke: no tasks, no worker code.
        state.dispatcher = TaskDispatcher(create_celery(settings, REGISTRY), state.broker, REGISTRY)
        state.publisher = AsyncEnvelopePublisher(
            state.redis, history_maxlen=settings.history_maxlen, history_ttl_s=settings.history_ttl_s
        )
        state.rate_limiter = RateLimiter(state.redis)
        state.password_hashing = PasswordHashing(
            concurrency=settings.auth_hash_concurrency, wait_s=settings.auth_hash_wait_s
        )
        state.admission = SubmitAdmission(
            state.broker, REGISTRY, rate_limit=settings.submit_rate_limit, max_backlog=settings.queue_max_backlog
        )
        # On a cluster the slot map is read now, before any socket is accepted: it decides which
        # listener subscribes to a user. A replica that cannot read it does not start.
        layout = await discover(state.redis) if settings.bus_redis_cluster else None
        state.manager = ConnectionManager(
            state.redis,
            history_maxlen=settings.history_maxlen,
            max_sockets_per_user=settings.ws_max_sockets_per_user,
            subscriptions=Subscriptions(len(layout.primaries), layout.shard_of) if layout else Subscriptions(),
        )
        canary_s, window_s = settings.bus_canary_interval_s, settings.bus_read_window_ms / 1000
        bus_url = settings.required_bus_redis_url
        state.bus = (
            ClusterBus(layout, bus_url, state.manager, canary_interval_s=canary_s, read_window_s=window_s)
            if layout
            else BusListener(state.redis, state.manager, canary_interval_s=canary_s, read_window_s=window_s)
        )
        state.ops = OpsBroadcaster(
            settings, state.sessions, state.redis, REGISTRY, state.manager, state.publisher, broker=state.broker
        )
        state.shutting_down = False
        background = [
            asyncio.create_task(state.bus.run(), name="bus-listener"),
            asyncio.create_task(state.manager.run_heartbeat(settings.ws_ping_interval_s), name="ws-heartbeat"),
            asyncio.create_task(_announce(app), name="presence"),
            asyncio.create_task(state.ops.run(), name="ops-push"),
        ]
        try:
            yield
        finally:
            await begin_shutdown(app)
            await cancel_and_wait(background)
            await state.redis.aclose()
            if state.broker is not state.redis:
                await state.broker.aclose()
            await state.engine.dispose()
            state.db.close()

    app = TaskwireApp(
        allowed_hosts=settings.allowed_hosts,
        title="Taskwire",
        version="0.1.0",
        lifespan=lifespan,
        openapi_url=api_docs.OPENAPI_URL,
        docs_url=None,  # api_docs serves both pages with their assets from this app
        redoc_url=None,
    )
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(SecurityHeadersMiddleware)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type", "Idempotency-Key"],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    app.add_middleware(HttpMetricsMiddleware)
    app.add_middleware(RequestContextMiddleware)
    for router in (
        api_docs.router,
        health_router,
        metrics_router,
        auth_router,
        chat_router,
        submissions_router,
        exercises_router,
        tasks_router,
        ops_router,
        ops_page_router,
        realtime_router,
    ):
        app.include_router(router)
    if FRONTEND_DIR.is_dir():
        app.mount("/", StaticFiles(directory=FRONTEND_DIR, html=True), name="frontend")
    return app
