import hmac
import time

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import NotAuthenticated, error_responses
from app.metrics import latency, shared
from app.metrics import registry as m
from app.ops.presence import WORKERS_KEY, read_alive
from app.ops.service import kinds_health, queue_depths

router = APIRouter(tags=["health"])


@router.get("/metrics", response_class=Response, responses=error_responses(NotAuthenticated))
async def metrics(request: Request) -> Response:
    """Prometheus metrics: this replica's process, sockets, bus and HTTP, plus cluster-wide task and queue figures.

    Everything here is a counter, a gauge read from memory or an O(1) Redis read: no query
    grows with the number of tasks. With METRICS_TOKEN set, it wants that bearer token.
    """
    state = request.app.state
    token = state.settings.metrics_token
    # As bytes: compare_digest refuses str with non-ASCII characters (a 500 for a header of é).
    sent = request.headers.get("authorization", "").encode("utf-8", "surrogateescape")
    if token and not hmac.compare_digest(sent, f"Bearer {token}".encode()):
        raise NotAuthenticated("send Authorization: Bearer <METRICS_TOKEN>")
    m.ws_connections.set(state.manager.connection_count)
    m.bus_connected.set(1 if state.bus.connected.is_set() else 0)
    shared_now = CollectorRegistry()
    shared_now.register(_Families(await _cluster_families(request)))
    return Response(generate_latest(m.registry) + generate_latest(shared_now), media_type=CONTENT_TYPE_LATEST)


async def _cluster_families(request: Request) -> list[Metric]:
    state = request.app.state
    families = [*await shared.collect(state.redis), *await latency.collect(state.redis, state.registry.names)]
    backlog = GaugeMetricFamily("taskwire_queue_backlog", "Task messages no worker has taken yet", labels=["queue"])
    age = GaugeMetricFamily(
        "taskwire_queue_oldest_age_seconds", "How long the oldest waiting message has waited", labels=["queue"]
    )
    now = time.time()
    for depth in await queue_depths(state.broker, state.registry):
        backlog.add_metric([depth.queue], depth.backlog)
        waited = now - depth.oldest_enqueued_at if depth.oldest_enqueued_at else 0.0
        age.add_metric([depth.queue], max(waited, 0.0))
    workers = await read_alive(state.redis, WORKERS_KEY)
    alive = GaugeMetricFamily("taskwire_workers", "Worker processes alive (heartbeat within 15 s)")
    alive.add_metric([], len(workers))
    available = GaugeMetricFamily(
        "taskwire_kind_available", "1 while a live worker can do the kind (0: none, or no Chromium)", labels=["kind"]
    )
    slots = GaugeMetricFamily("taskwire_worker_slots", "Task slots of live workers able to work", labels=["kind"])
    running = GaugeMetricFamily("taskwire_worker_running", "Deliveries in live workers now", labels=["kind"])
    for kind, health in kinds_health(workers, state.registry).items():
        available.add_metric([kind], 1 if health.available else 0)
        slots.add_metric([kind], health.slots)
        running.add_metric([kind], health.running)
    return [*families, backlog, age, alive, available, slots, running]


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
