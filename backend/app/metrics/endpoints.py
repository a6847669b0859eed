import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.chat.keys import TOKENS_KEY
from app.metrics import latency
from app.metrics import registry as m
from app.models import Task
from app.tasks.keys import METRICS_KEY

router = APIRouter(tags=["health"])


def _count_tasks(session: Session) -> list[tuple[str, str, int]]:
    rows = session.execute(select(Task.kind, Task.state, func.count()).group_by(Task.kind, Task.state))
    return [(kind, state, int(count)) for kind, state, count in rows]


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    """Prometheus metrics: this replica's sockets, bus and HTTP, plus cluster-wide task and LLM figures."""
    state = request.app.state
    m.ws_connections.set(state.manager.connection_count)
    m.bus_reconnects.set(state.bus.reconnects)
    m.bus_connected.set(1 if state.bus.connected.is_set() else 0)
    async with state.sessions() as session:
        for kind, task_state, count in await session.run_sync(_count_tasks):
            m.tasks_by_state.labels(kind, task_state).set(count)
    for field, value in (await state.redis.hgetall(TOKENS_KEY)).items():
        model, _, kind = field.rpartition(":")
        m.llm_tokens.labels(model, kind.removesuffix("_tokens")).set(int(value))
    for field, value in (await state.redis.hgetall(METRICS_KEY)).items():
        if field.startswith("duplicate_deliveries:"):
            m.duplicate_deliveries.labels(field.partition(":")[2]).set(int(value))
    shared = CollectorRegistry()
    shared.register(_Families(await latency.collect(state.redis, state.registry.names)))
    return Response(generate_latest(m.registry) + generate_latest(shared), media_type=CONTENT_TYPE_LATEST)


class _Families:
    """Metric families gathered just now, served as a one-off collector."""

    def __init__(self, families: list[Metric]):
        self._families = families

    def collect(self) -> list[Metric]:
        return self._families


class HttpMetricsMiddleware:
    """Observes each HTTP request's latency by route template (not raw path: ids would explode labels)."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, recording_send)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "static"
            m.http_latency.labels(scope["method"], template, str(status)).observe(time.perf_counter() - started)
